// Package bridge is the interop core of Ferry: a peer of the legacy overlay
// that speaks there for users whose inbound home is the cloud, and a
// privileged client of the cloud service that carries legacy users' traffic.
//
// Routing follows the recipient's phase (migrate.User.CloudHome): a legacy
// device that messages a cloud-home user is pointed at the bridge by an
// authority-signed route record, and the bridge writes the message into the
// cloud conversation acting for the legacy sender; a cloud message to a
// legacy-home user reaches the bridge through its cloud link, is delivered to
// the user's legacy devices, and the device's delivery ack becomes a
// delivery receipt in the cloud history.
//
// The bridge acknowledges a legacy sender only after the cloud has made the
// message durable, and it resumes its cloud feed from a cursor kept in
// JetStream, so a restart neither loses nor replays what users see (legacy
// devices drop repeated message ids).
//
// bridge is the only package that imports both legacy/ and cloud/.
package bridge
