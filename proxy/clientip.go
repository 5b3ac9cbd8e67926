package proxy

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// TrustedProxies is the parsed trusted_proxies list: the peers whose
// X-Forwarded-For and X-Forwarded-Proto are believed. It is immutable after
// ParseTrustedProxies, so one value is shared by every request goroutine.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies parses CIDRs ("10.0.0.0/8", "2001:db8::/32") and bare
// addresses ("192.0.2.7", taken as a /32 or /128). Every bad entry is
// reported in one error so a config with several typos is fixed in one pass.
func ParseTrustedProxies(list []string) (*TrustedProxies, error) {
	t := &TrustedProxies{prefixes: make([]netip.Prefix, 0, len(list))}
	var bad []string
	for _, s := range list {
		s = strings.TrimSpace(s)
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%q", s))
				continue
			}
			p = p.Masked()
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
			}
			t.prefixes = append(t.prefixes, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%q", s))
			continue
		}
		a = a.Unmap().WithZone("")
		t.prefixes = append(t.prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("trusted_proxies: not a CIDR or IP address: %s", strings.Join(bad, ", "))
	}
	return t, nil
}

// Contains reports whether ip is a trusted proxy. A nil or empty list
// trusts nobody.
func (t *TrustedProxies) Contains(ip netip.Addr) bool {
	if t == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range t.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Len is the number of entries; zero means no peer is trusted.
func (t *TrustedProxies) Len() int {
	if t == nil {
		return 0
	}
	return len(t.prefixes)
}

// ClientIP is DESIGN §4's client address rule. When the peer (remote) is a
// trusted proxy, the X-Forwarded-For chain is scanned from the right and the
// first address that is not itself a trusted proxy is the client; entries to
// its left were written by the client and are not believed. When the peer is
// not trusted, X-Forwarded-For is ignored: anyone can write it. If every hop
// in the chain is trusted, the leftmost one is the best answer; an
// unparseable entry stops the scan (nothing left of it can be believed) and
// the last good address to its right is returned.
//
// xff may hold several comma-separated entries; entries may carry a port
// ("192.0.2.1:4711", "[2001:db8::1]:80") as some load balancers write them.
// The result never aliases xff.
func ClientIP(remote netip.Addr, xff []byte, trusted *TrustedProxies) netip.Addr {
	remote = remote.Unmap()
	if !trusted.Contains(remote) {
		return remote
	}
	ip, _ := scanXFF(remote, xff, trusted)
	return ip
}

// scanXFF walks one X-Forwarded-For value from the right. best is the
// answer so far (an address that is trusted); done reports that a client
// (untrusted or unparseable boundary) was found and the scan must stop.
func scanXFF(best netip.Addr, xff []byte, trusted *TrustedProxies) (netip.Addr, bool) {
	for len(xff) > 0 {
		var entry []byte
		if i := bytes.LastIndexByte(xff, ','); i >= 0 {
			entry, xff = xff[i+1:], xff[:i]
		} else {
			entry, xff = xff, nil
		}
		entry = bytes.TrimSpace(entry)
		if len(entry) == 0 {
			continue
		}
		ip, ok := parseForwardedAddr(entry)
		if !ok {
			return best, true
		}
		if !trusted.Contains(ip) {
			return ip, true
		}
		best = ip
	}
	return best, false
}

// clientIPFromHeaders applies ClientIP over every X-Forwarded-For header
// line, last line first, as if they were one comma-joined value (RFC 9110
// §5.3).
func clientIPFromHeaders(remote netip.Addr, xffs [][]byte, trusted *TrustedProxies) netip.Addr {
	remote = remote.Unmap()
	if !trusted.Contains(remote) {
		return remote
	}
	best := remote
	for i := len(xffs) - 1; i >= 0; i-- {
		var done bool
		best, done = scanXFF(best, xffs[i], trusted)
		if done {
			break
		}
	}
	return best
}

// parseForwardedAddr parses one X-Forwarded-For entry, with or without a
// port, without allocating.
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	// The string view is only used for parsing; the parsed netip.Addr holds
	// no reference to it, and parse errors (which would) are discarded. This
	// keeps the per-request path allocation-free.
	s := unsafe.String(unsafe.SliceData(b), len(b))
	// Pick the parser up front: a failed parse allocates its error.
	if b[0] == '[' || bytes.Count(b, []byte{':'}) == 1 {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		return ap.Addr().Unmap().WithZone(""), true
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// peerAddr is the TCP peer of ctx as a netip.Addr (invalid for non-TCP
// test connections, which therefore never count as trusted).
func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return ip.Unmap()
}

// clientIP is the client address of the request by DESIGN §4's rule. The
// tracking routes copy it into the event; it holds no reference to ctx.
func (s *Server) clientIP(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := peerAddr(ctx)
	if !s.trusted.Contains(peer) {
		return peer
	}
	return clientIPFromHeaders(peer, ctx.Request.Header.PeekAll(fasthttp.HeaderXForwardedFor), s.trusted)
}
