package cloudwire

import (
	"crypto/sha256"
	"encoding/hex"
)

// DirectConversationID returns the id of the one-to-one conversation between
// users a and b: "d" followed by the first 32 hex digits of
// sha256(min(a,b) + "\n" + max(a,b)). It does not depend on the order of its
// arguments, so both networks and every device name the conversation the same
// without asking anyone. Group ids, assigned by the cloud, never start with "d".
func DirectConversationID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	sum := sha256.Sum256([]byte(a + "\n" + b))
	return "d" + hex.EncodeToString(sum[:16])
}

// GroupConversationID returns the id of the group created by creator with
// the create request's message id: "g" followed by the first 32 hex digits
// of sha256(creator + "\n" + msgID). The cloud assigns it; deriving it from
// the request makes a repeated create name the same group.
func GroupConversationID(creator, msgID string) string {
	sum := sha256.Sum256([]byte(creator + "\n" + msgID))
	return "g" + hex.EncodeToString(sum[:16])
}

// IsGroupID reports whether conv names a group (rather than a one-to-one
// conversation).
func IsGroupID(conv string) bool {
	return len(conv) > 1 && conv[0] == 'g' && ValidID(conv)
}
