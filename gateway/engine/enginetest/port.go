package enginetest

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports handed out by FreePort come from below the kernel's ephemeral range
// (32768-60999 on Linux), so a socket bound to port 0 anywhere on the
// machine (another package's test, a child process) can never take one
// between the pick and its use; within this process none is handed out
// twice.
const (
	freePortLow  = 20000
	freePortHigh = 32000
)

var freePorts struct {
	sync.Mutex
	given map[int]bool
}

// FreePort returns a loopback port that nothing listened on when it was
// picked, for a listener that must be given its port in advance (a
// cluster's routes, an agent restarted at the same address).
func FreePort(tb testing.TB) string {
	tb.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	if freePorts.given == nil {
		freePorts.given = map[int]bool{}
	}
	for range 1000 {
		p := freePortLow + rand.IntN(freePortHigh-freePortLow)
		if freePorts.given[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // in use
		}
		ln.Close()
		freePorts.given[p] = true
		return strconv.Itoa(p)
	}
	tb.Fatal("no free loopback port below the ephemeral range after 1000 tries")
	return ""
}
