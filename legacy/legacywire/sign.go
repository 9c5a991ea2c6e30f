package legacywire

import (
	"encoding/binary"
	"time"
)

// Domain separators for the signing bytes. A signature made for one kind of
// record never verifies as another kind.
const (
	certDomain   = "ferry-cert-v1\n"
	routeDomain  = "ferry-route-v1\n"
	revokeDomain = "ferry-revoke-v1\n"
)

// signer builds canonical signing bytes: every variable-length field is
// prefixed with its length, so no two distinct records share their bytes.
type signer struct{ b []byte }

func newSigner(domain string) *signer {
	return &signer{b: append(make([]byte, 0, 256), domain...)}
}

func (s *signer) str(v string) {
	s.b = binary.AppendUvarint(s.b, uint64(len(v)))
	s.b = append(s.b, v...)
}

func (s *signer) strs(v []string) {
	s.b = binary.AppendUvarint(s.b, uint64(len(v)))
	for _, x := range v {
		s.str(x)
	}
}

func (s *signer) u64(v uint64) { s.b = binary.BigEndian.AppendUint64(s.b, v) }

// time appends t as signed Unix milliseconds; sub-millisecond precision is not
// signed, which is why the Sign functions truncate times first.
func (s *signer) time(t time.Time) { s.u64(uint64(t.UnixMilli())) }

func (s *signer) bool(v bool) {
	if v {
		s.b = append(s.b, 1)
	} else {
		s.b = append(s.b, 0)
	}
}

// canonicalTime is the form in which times are signed and carried: UTC,
// millisecond precision.
func canonicalTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }
