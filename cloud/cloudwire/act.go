package cloudwire

// Puppet sessions (v10): a bridge session opens a puppet for each user it
// acts for before its first request as them, and closes it when idle.

// Frame types of puppet sessions.
const (
	// TypeAct is a bridge session's request to open or close a puppet
	// (client to server), answered by TypeActing or an Error.
	TypeAct = "act"
	// TypeActing answers an Act that succeeded (server to client).
	TypeActing = "acting"
)

// Act operations (Act.Op).
const (
	ActOpen  = "open"
	ActClose = "close"
)

// Act asks a bridge session's service to open (ActOpen) or close
// (ActClose) a puppet for As, the user the bridge is about to act for. An
// open is checked once against the service's act-for rule and refused
// with CodeForbidden when the bridge may not act for As (the user's
// inbound home is the cloud); requests naming As keep being checked one by
// one, so an open puppet never outlives a phase change. A close always
// succeeds. Only bridge sessions may send it.
type Act struct {
	Ref string `json:"ref,omitempty"`
	Op  string `json:"op"`
	As  string `json:"as"`
}

// Acting answers an Act: Op and As repeat the request's; Puppets is how
// many puppets the session holds open after it.
type Acting struct {
	Ref     string `json:"ref,omitempty"`
	Op      string `json:"op"`
	As      string `json:"as"`
	Puppets int    `json:"puppets"`
}

// FrameType implements Frame.
func (Act) FrameType() string { return TypeAct }

// FrameType implements Frame.
func (Acting) FrameType() string { return TypeActing }

// Validate checks an Act's fields.
func (a Act) Validate() error {
	if err := validRef(a.Ref); err != nil {
		return err
	}
	return validAct(a.Op, a.As)
}

// Validate checks an Acting's fields.
func (a Acting) Validate() error {
	if err := validRef(a.Ref); err != nil {
		return err
	}
	if a.Puppets < 0 {
		return invalid("puppets", "is negative")
	}
	return validAct(a.Op, a.As)
}

func validAct(op, as string) error {
	if op != ActOpen && op != ActClose {
		return invalid("op", "must be open or close")
	}
	if !ValidID(as) {
		return invalid("as", "is not a valid user id")
	}
	return nil
}
