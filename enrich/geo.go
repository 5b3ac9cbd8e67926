package enrich

import (
	"fmt"
	"strings"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/sidetrack/sidetrack/config"
)

// Geo is the geo stage (DESIGN §4 "Geo"): it looks the client IP up in a
// MaxMind-format database (GeoIP2 / GeoLite2 City or Country, DB-IP
// City/Country Lite) named by privacy.geoip and sets Context.Country to
// the country's ISO 3166-1 alpha-2 code and Context.Region to the first
// (largest) subdivision's ISO 3166-2 code without the country prefix,
// both upper-case as MaxMind gives them ("US" / "CA", "DE" / "BE"). It
// runs before privacy reduces the IP, and never stores the IP itself.
//
// It reads only those two strings through maxminddb-golang's path
// decoding (the library under geoip2-golang): decoding a whole City record
// per event, localized names included, would cost dozens of allocations
// on the hot path. Server requests are skipped (their address is the
// backend's), and so is an event that already names its country. Without
// privacy.geoip the stage does nothing.
type Geo struct {
	db *maxminddb.Reader
	// scratch holds the decode targets: DecodePath takes them as `any`,
	// which would move a local to the heap on every lookup.
	scratch sync.Pool
}

type geoScratch struct{ country, region string }

// NewGeo opens privacy.geoip when set. It fails when the file cannot be
// opened or is not a City or Country database.
func NewGeo(cfg *config.Config) (*Geo, error) {
	path := cfg.Privacy.GeoIP
	if path == "" {
		return &Geo{}, nil
	}
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("privacy.geoip: %w", err)
	}
	if t := db.Metadata.DatabaseType; !strings.Contains(t, "City") && !strings.Contains(t, "Country") && !strings.Contains(t, "Enterprise") {
		db.Close()
		return nil, fmt.Errorf("privacy.geoip: %s is a %q database; a City or Country database is needed (e.g. GeoLite2-City.mmdb)", path, t)
	}
	return &Geo{db: db}, nil
}

// Apply implements Stage.
func (g *Geo) Apply(req *Request, e *Event, _ *EventResult) {
	if g.db == nil || req.Server || !req.ClientIP.IsValid() || e.Context.Country != "" {
		return
	}
	r := g.db.Lookup(req.ClientIP.Unmap().WithZone(""))
	if !r.Found() {
		return
	}
	sc, _ := g.scratch.Get().(*geoScratch)
	if sc == nil {
		sc = new(geoScratch)
	}
	defer g.scratch.Put(sc)
	sc.country, sc.region = "", ""
	if err := r.DecodePath(&sc.country, "country", "iso_code"); err != nil || sc.country == "" {
		return
	}
	e.Context.Country = e.InternString(sc.country)
	if e.Context.Region == "" {
		if err := r.DecodePath(&sc.region, "subdivisions", 0, "iso_code"); err == nil && sc.region != "" {
			e.Context.Region = e.InternString(sc.region)
		}
	}
}

// Close releases the database.
func (g *Geo) Close() error {
	if g.db == nil {
		return nil
	}
	return g.db.Close()
}
