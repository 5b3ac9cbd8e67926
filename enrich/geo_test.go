package enrich

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/sidetrack/sidetrack/config"
)

// geoRecord is a GeoIP2-City-shaped record with the fields real
// databases carry around the two Geo reads (names included, so the path
// decoding is tested against a realistic layout).
func geoRecord(country, region string) mmdbtype.Map {
	names := func(n string) mmdbtype.Map {
		return mmdbtype.Map{"en": mmdbtype.String(n), "de": mmdbtype.String(n + " (de)")}
	}
	m := mmdbtype.Map{
		"continent":          mmdbtype.Map{"code": mmdbtype.String("XX"), "names": names("Continent")},
		"country":            mmdbtype.Map{"iso_code": mmdbtype.String(country), "geoname_id": mmdbtype.Uint32(42), "names": names("Country " + country)},
		"registered_country": mmdbtype.Map{"iso_code": mmdbtype.String("ZZ")},
		"location":           mmdbtype.Map{"latitude": mmdbtype.Float64(1.5), "longitude": mmdbtype.Float64(2.5)},
	}
	if region != "" {
		m["subdivisions"] = mmdbtype.Slice{
			mmdbtype.Map{"iso_code": mmdbtype.String(region), "names": names("Region " + region)},
			mmdbtype.Map{"iso_code": mmdbtype.String("SUB"), "names": names("Smaller")},
		}
	}
	return m
}

// geoDB writes a tiny MaxMind DB of the given type and returns its path.
func geoDB(t testing.TB, dbType string, nets map[string]mmdbtype.Map) string {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range nets {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(n, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), strings.ToLower(dbType)+".mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func geoCityDB(t testing.TB) string {
	return geoDB(t, "GeoLite2-City", map[string]mmdbtype.Map{
		"203.0.113.0/24": geoRecord("US", "CA"),
		"2001:db8::/32":  geoRecord("DE", "BE"),
		"198.51.100.0/24": {
			"country": mmdbtype.Map{"iso_code": mmdbtype.String("FR")},
		},
	})
}

func geoNew(t testing.TB, path string) *Geo {
	t.Helper()
	cfg := config.Default()
	cfg.Privacy.GeoIP = path
	g, err := NewGeo(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestGeoLookup(t *testing.T) {
	g := geoNew(t, geoCityDB(t))
	for _, tc := range []struct {
		ip, country, region string
		server              bool
		preset              string
	}{
		{ip: "203.0.113.9", country: "US", region: "CA"},
		{ip: "::ffff:203.0.113.9", country: "US", region: "CA"},
		{ip: "2001:db8:1::5", country: "DE", region: "BE"},
		{ip: "198.51.100.1", country: "FR"},
		{ip: "192.0.2.1"},
		{ip: "203.0.113.9", server: true},
		{ip: "203.0.113.9", preset: "GB", country: "GB"},
		{ip: ""},
	} {
		req := &Request{Server: tc.server}
		if tc.ip != "" {
			req.ClientIP = netip.MustParseAddr(tc.ip)
		}
		e := &Event{Context: Context{Country: tc.preset}}
		g.Apply(req, e, &EventResult{})
		if e.Context.Country != tc.country || e.Context.Region != tc.region {
			t.Errorf("%s (server %v): %q/%q, want %q/%q", tc.ip, tc.server, e.Context.Country, e.Context.Region, tc.country, tc.region)
		}
	}
}

func TestGeoCountryDatabase(t *testing.T) {
	path := geoDB(t, "GeoLite2-Country", map[string]mmdbtype.Map{
		"203.0.113.0/24": {"country": mmdbtype.Map{"iso_code": mmdbtype.String("NL")}},
	})
	g := geoNew(t, path)
	e := &Event{}
	g.Apply(&Request{ClientIP: netip.MustParseAddr("203.0.113.1")}, e, &EventResult{})
	if e.Context.Country != "NL" || e.Context.Region != "" {
		t.Fatalf("%+v", e.Context)
	}
}

func TestNewGeo(t *testing.T) {
	g := geoNew(t, "")
	e := &Event{}
	g.Apply(&Request{ClientIP: netip.MustParseAddr("203.0.113.1")}, e, &EventResult{})
	if e.Context.Country != "" {
		t.Fatal("no database, yet a country")
	}
	cfg := config.Default()
	cfg.Privacy.GeoIP = filepath.Join(t.TempDir(), "missing.mmdb")
	if _, err := NewGeo(cfg); err == nil || !strings.Contains(err.Error(), "privacy.geoip") {
		t.Errorf("missing file: %v", err)
	}
	cfg.Privacy.GeoIP = geoDB(t, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"203.0.113.0/24": {"autonomous_system_number": mmdbtype.Uint32(64500)},
	})
	if _, err := NewGeo(cfg); err == nil || !strings.Contains(err.Error(), "City or Country") {
		t.Errorf("ASN database: %v", err)
	}
	notDB := filepath.Join(t.TempDir(), "x.mmdb")
	os.WriteFile(notDB, []byte("not a database"), 0o600)
	cfg.Privacy.GeoIP = notDB
	if _, err := NewGeo(cfg); err == nil {
		t.Error("garbage file accepted")
	}
}

// TestGeoBeforePrivacy: in pipeline order geo sees the full address and
// privacy then reduces it; the country survives, the address does not.
func TestGeoBeforePrivacy(t *testing.T) {
	clk := &idClock{t: saltT0}
	cfg := pvConfig("truncate", "truncate")
	cfg.Privacy.GeoIP = geoCityDB(t)
	cs, err := NewConsent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGeo(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	p := NewPipeline(clk.now, cs, g, pvNew(t, cfg, clk))
	e := &Event{}
	var res Result
	p.Process(&Request{ClientIP: netip.MustParseAddr("203.0.113.250")}, []*Event{e}, &res)
	out := string(e.AppendJSON(nil))
	if e.Context.Country != "US" || e.Context.IPTruncated != "203.0.113.0" || strings.Contains(out, "203.0.113.250") {
		t.Fatalf("%s", out)
	}
}

func TestGeoNoAlloc(t *testing.T) {
	g := geoNew(t, geoCityDB(t))
	req := &Request{ClientIP: netip.MustParseAddr("203.0.113.9")}
	e := &Event{}
	g.Apply(req, e, &EventResult{})
	if n := testing.AllocsPerRun(100, func() {
		e.Context.Country, e.Context.Region = "", ""
		g.Apply(req, e, &EventResult{})
	}); n > 0 {
		t.Fatalf("%v allocs per lookup", n)
	}
}

// BenchmarkGeo: one City lookup (country and region).
func BenchmarkGeo(b *testing.B) {
	g := geoNew(b, geoCityDB(b))
	req := &Request{ClientIP: netip.MustParseAddr("2001:db8:1::5")}
	var pool EventPool
	var r EventResult
	b.ReportAllocs()
	for b.Loop() {
		e := pool.Get()
		g.Apply(req, e, &r)
		pool.Put(e)
	}
}
