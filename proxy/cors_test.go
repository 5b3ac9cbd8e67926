package proxy

import (
	"testing"
)

func TestCORSAllowed(t *testing.T) {
	hostsPolicy := newCORSPolicy(nil, []string{"shop.example", "Shop.Other"})
	listPolicy := newCORSPolicy([]string{"https://app.partner.example", "https://*.cdn.example"}, []string{"shop.example"})
	tests := []struct {
		name   string
		p      *corsPolicy
		origin string
		host   string
		want   bool
	}{
		{"host itself", hostsPolicy, "https://shop.example", "shop.example", true},
		{"subdomain", hostsPolicy, "https://www.shop.example", "shop.example", true},
		{"deep subdomain with port", hostsPolicy, "https://a.b.shop.example:8443", "x", true},
		{"case-insensitive", hostsPolicy, "HTTPS://WWW.SHOP.EXAMPLE", "x", true},
		{"second host", hostsPolicy, "https://shop.other", "x", true},
		{"plain http not allowed", hostsPolicy, "http://shop.example", "x", false},
		{"suffix trick", hostsPolicy, "https://evilshop.example", "x", false},
		{"suffix trick 2", hostsPolicy, "https://shop.example.evil.com", "x", false},
		{"same host as request", hostsPolicy, "http://localhost:8080", "localhost:8080", true},
		{"other", hostsPolicy, "https://evil.example", "shop.example", false},
		{"null origin", hostsPolicy, "null", "shop.example", false},
		{"empty", hostsPolicy, "", "shop.example", false},
		{"configured list replaces hosts", listPolicy, "https://shop.example", "x", false},
		{"configured exact", listPolicy, "https://app.partner.example", "x", true},
		{"configured wildcard", listPolicy, "https://img.cdn.example", "x", true},
		{"configured wildcard apex not included", listPolicy, "https://cdn.example", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.allowed([]byte(tt.origin), []byte(tt.host)); got != tt.want {
				t.Errorf("allowed(%q, host %q) = %v, want %v", tt.origin, tt.host, got, tt.want)
			}
		})
	}
}

func TestCORSAllowedDoesNotModifyInput(t *testing.T) {
	p := newCORSPolicy(nil, []string{"shop.example"})
	o := []byte("HTTPS://SHOP.EXAMPLE")
	p.allowed(o, nil)
	if string(o) != "HTTPS://SHOP.EXAMPLE" {
		t.Fatalf("origin modified: %s", o)
	}
}
