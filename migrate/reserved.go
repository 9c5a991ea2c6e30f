package migrate

import "strings"

// NoticesUser is the official system contact, the sender of version
// notices on both networks (legacywire.NoticesUser, cloudwire.SystemContact;
// a gateway test keeps the three equal). No person may have its id, nor an
// id that differs from it only in case, so that nobody can pass for it.
const NoticesUser = "ferry-notices"

func isReservedUserID(id string) bool { return strings.EqualFold(id, NoticesUser) }
