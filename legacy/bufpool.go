package legacy

import (
	"bufio"
	"io"
	"sync"
)

// Most overlay streams carry one short exchange (a directory request, a chat
// hello and one frame, an ack), so a fresh 4 KiB reader and writer per
// stream were a large share of a stream's garbage. These pools lend them;
// a borrower returns them once it no longer reads or writes through them.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReader(nil) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriter(nil) }}
)

// getReader returns a pooled buffered reader of r; give it back with
// putReader.
func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// putReader returns br to the pool, dropping what it still buffered and
// its reference to the stream.
func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

// getWriter returns a pooled buffered writer to w; give it back with
// putWriter.
func getWriter(w io.Writer) *bufio.Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

// putWriter returns bw to the pool, dropping anything not flushed and its
// reference to the stream.
func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writerPool.Put(bw)
}
