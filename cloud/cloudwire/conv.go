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
