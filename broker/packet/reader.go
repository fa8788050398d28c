package packet

import (
	"errors"
	"io"
)

const (
	readBufSize = 4096    // read-ahead buffer for headers and small packets
	bodyChunk   = 1 << 16 // a large body grows in steps from this size
	maxNoProg   = 100     // consecutive empty reads before io.ErrNoProgress
)

// Reader reads MQTT packets from a byte stream. It joins partial reads,
// rejects a packet larger than the maximum packet size from its fixed
// header alone (before allocating or reading the body), and decodes with
// the version of the connection, which it learns from CONNECT.
//
// Each packet returned owns its memory: the body is allocated per packet,
// so []byte fields that alias it stay valid after later ReadPacket calls.
// A Reader is not safe for concurrent use.
type Reader struct {
	r      io.Reader
	max    uint32
	v      Version
	buf    []byte // read-ahead; unread bytes are buf[start:end]
	start  int
	end    int
	rerr   error // error returned by r together with data, reported next
	sticky error // stream no longer usable
}

// NewReader returns a Reader on r. maxPacketSize limits the whole packet
// (fixed header included); 0 means no limit other than the protocol's.
// The version starts at V311; it changes when a CONNECT is read or with
// SetVersion (a client sets it to the version it sent in CONNECT).
func NewReader(r io.Reader, maxPacketSize uint32) *Reader {
	return &Reader{r: r, max: maxPacketSize, v: V311, buf: make([]byte, readBufSize)}
}

// SetVersion sets the protocol version used to decode the next packets.
func (r *Reader) SetVersion(v Version) { r.v = v }

// Version is the protocol version the Reader currently decodes with.
func (r *Reader) Version() Version { return r.v }

// SetMaxPacketSize changes the maximum packet size (0: no limit).
func (r *Reader) SetMaxPacketSize(n uint32) { r.max = n }

// ReadPacket reads and decodes the next packet. It returns io.EOF when the
// stream ends cleanly between packets and io.ErrUnexpectedEOF when it ends
// inside one. Errors of the fixed header (Malformed, PacketTooLarge) and of
// the underlying reader are sticky: every later call returns them again,
// since the stream is out of step. Decode errors are not sticky (the whole
// packet was consumed), though a broker normally closes the connection.
// After a CONNECT decodes, the Reader switches to the CONNECT's version;
// a CONNECT rejected with an error is returned as Decode returns it.
func (r *Reader) ReadPacket() (Packet, error) {
	if r.sticky != nil {
		return nil, r.sticky
	}
	h, err := r.readHeader()
	if err != nil {
		r.sticky = err
		return nil, err
	}
	body, err := r.readBody(h.Remaining)
	if err != nil {
		r.sticky = err
		return nil, err
	}
	p, err := Decode(h, body, r.v)
	if err != nil {
		return p, err
	}
	if c, ok := p.(*Connect); ok {
		r.v = c.Version
	}
	return p, nil
}

// readHeader parses a fixed header from the read-ahead buffer, reading
// more as needed, and consumes it.
func (r *Reader) readHeader() (FixedHeader, error) {
	for {
		h, err := ParseFixedHeader(r.buf[r.start:r.end], r.max)
		if err == nil {
			r.start += h.HeaderLen
			return h, nil
		}
		if err != ErrIncomplete {
			return h, err
		}
		if err := r.fill(); err != nil {
			if err == io.EOF && r.end > r.start {
				return h, io.ErrUnexpectedEOF
			}
			return h, err
		}
	}
}

// fill compacts the buffer and reads at least one more byte into it.
func (r *Reader) fill() error {
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	if r.rerr != nil {
		err := r.rerr
		r.rerr = nil
		return err
	}
	for range maxNoProg {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		if n > 0 {
			r.rerr = err
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// readBody returns a new slice of n bytes holding the packet body.
func (r *Reader) readBody(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if n <= len(r.buf) { // small: gather in the read-ahead buffer, then copy
		for r.end-r.start < n {
			if err := r.fill(); err != nil {
				return nil, unexpected(err)
			}
		}
		body := make([]byte, n)
		copy(body, r.buf[r.start:r.start+n])
		r.start += n
		return body, nil
	}
	// Large: grow with the data actually received, so that a length that
	// was not checked against a limit cannot make us allocate it up front.
	body := make([]byte, r.end-r.start, max(min(n, bodyChunk), r.end-r.start))
	copy(body, r.buf[r.start:r.end])
	r.start, r.end = 0, 0
	if r.rerr != nil && len(body) < n {
		return nil, unexpected(r.rerr)
	}
	for empty := 0; len(body) < n; {
		if len(body) == cap(body) {
			nb := make([]byte, len(body), min(2*cap(body), n))
			copy(nb, body)
			body = nb
		}
		m, err := r.r.Read(body[len(body):min(cap(body), n)])
		body = body[:len(body)+m]
		if len(body) == n {
			r.rerr = err
			break
		}
		if err != nil {
			return nil, unexpected(err)
		}
		if m == 0 {
			if empty++; empty >= maxNoProg {
				return nil, io.ErrNoProgress
			}
		}
	}
	return body, nil
}

// unexpected turns io.EOF inside a packet into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
