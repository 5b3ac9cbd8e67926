package proxy

import (
	"bytes"
	"errors"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fasthttp"
)

// Body errors of the tracking routes. Routes answer errBodyTooLarge with
// 413 and errBadGzip with 400, and count both as rejections.
var (
	errBodyTooLarge = errors.New("proxy: request body exceeds the route's limit")
	errBadGzip      = errors.New("proxy: malformed gzip body")
)

// readBody appends the request body to dst[:0] and returns it, reading at
// most limit bytes. With StreamRequestBody the body may still be on the
// wire, so it is read from the stream with the cap applied as it arrives;
// a Content-Length above limit is refused before anything is read. The
// result aliases dst (never a fasthttp buffer), so it may outlive the
// handler if dst does.
func readBody(ctx *fasthttp.RequestCtx, limit int, dst []byte) ([]byte, error) {
	dst = dst[:0]
	if cl := ctx.Request.Header.ContentLength(); cl > limit {
		return dst, errBodyTooLarge
	}
	stream := ctx.RequestBodyStream()
	if stream == nil {
		body := ctx.Request.Body()
		if len(body) > limit {
			return dst, errBodyTooLarge
		}
		return append(dst, body...), nil
	}
	for {
		if len(dst) == cap(dst) {
			grow := min(max(cap(dst), 4096), limit+1-len(dst))
			if grow <= 0 {
				return dst[:0], errBodyTooLarge
			}
			dst = append(dst, make([]byte, grow)...)[:len(dst)]
		}
		// Never read more than limit+1 bytes: one byte past the limit is
		// enough to know the body is too large.
		room := min(cap(dst), limit+1)
		n, err := stream.Read(dst[len(dst):room])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst[:0], errBodyTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:0], err
		}
	}
}

// isGzip reports whether b starts with the gzip magic (1f 8b, deflate):
// clients send gzip bodies labelled text/plain or with no Content-Encoding.
func isGzip(b []byte) bool {
	return len(b) >= 3 && b[0] == 0x1f && b[1] == 0x8b && b[2] == 8
}

// gzipState is one pooled decompressor with the reader it reads from.
type gzipState struct {
	src bytes.Reader
	zr  gzip.Reader
}

// gunzipLimited appends the decompressed src to dst[:0], producing at most
// limit bytes: a zip bomb stops at limit+1 and returns errBodyTooLarge, a
// malformed or truncated stream returns errBadGzip. Decompressors are
// pooled per Server.
func (s *Server) gunzipLimited(dst, src []byte, limit int) ([]byte, error) {
	dst = dst[:0]
	g, _ := s.gzipPool.Get().(*gzipState)
	if g == nil {
		g = new(gzipState)
	}
	defer func() {
		g.src.Reset(nil)
		s.gzipPool.Put(g)
	}()
	g.src.Reset(src)
	if err := g.zr.Reset(&g.src); err != nil {
		return dst, errBadGzip
	}
	for {
		if len(dst) == cap(dst) {
			grow := min(max(cap(dst), 2*len(src), 4096), limit+1-len(dst))
			if grow <= 0 {
				return dst[:0], errBodyTooLarge
			}
			dst = append(dst, make([]byte, grow)...)[:len(dst)]
		}
		room := min(cap(dst), limit+1)
		n, err := g.zr.Read(dst[len(dst):room])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst[:0], errBodyTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:0], errBadGzip
		}
	}
}
