package proxy

import (
	"bytes"

	"github.com/sidetrack/sidetrack/enrich"
)

// setPage sets e.URL from an absolute page URL and derives Path and Host
// from it. The URL is copied into the event. Relative or garbled URLs keep
// URL but leave Host/Path empty rather than guessing.
func setPage(e *enrich.Event, url []byte) {
	if len(url) == 0 {
		return
	}
	e.URL = e.Intern(url)
	s := e.URL
	i := bytes.Index(url, []byte("://"))
	if i <= 0 {
		if s[0] == '/' {
			e.Path = pathOnly(s)
		}
		return
	}
	rest := s[i+3:]
	end := len(rest)
	for j := 0; j < len(rest); j++ {
		if c := rest[j]; c == '/' || c == '?' || c == '#' {
			end = j
			break
		}
	}
	host := rest[:end]
	if at := lastIndexByte(host, '@'); at >= 0 {
		host = host[at+1:] // never keep userinfo as the host
	}
	e.Host = host
	if end < len(rest) && rest[end] == '/' {
		e.Path = pathOnly(rest[end:])
	} else {
		e.Path = "/"
	}
}

// pathOnly cuts the query and fragment off a path.
func pathOnly(s string) string {
	for j := 0; j < len(s); j++ {
		if s[j] == '?' || s[j] == '#' {
			return s[:j]
		}
	}
	return s
}

func lastIndexByte(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}
