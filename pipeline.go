package main

import (
	"crypto/rand"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// stages are the enrichment stages that other parts need to reach: the
// proxy mints identity cookies on pass-through pages, adapters open
// sealed IPs, the spool backs dedup's exact tier.
type stages struct {
	pipeline *enrich.Pipeline
	identity *enrich.Identity
	privacy  *enrich.Privacy
	dedup    *enrich.Dedup
	join     *enrich.Join
	closers  []func() error
}

// close releases the stages' resources in reverse order of creation.
func (s *stages) close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// buildPipeline assembles the enrichment stages in DESIGN §1's order:
// consent → identity → attribution → geo → privacy → bot → naming →
// validation → join → dedup. index is the durable dedup index (the spool),
// nil when there is none.
func buildPipeline(cfg *config.Config, log *zap.Logger, now func() time.Time, index enrich.IDIndex) (*stages, error) {
	if now == nil {
		now = time.Now
	}
	st := &stages{}
	var errs []error
	keep := func(err error) { errs = append(errs, err) }

	consent, err := enrich.NewConsent(cfg)
	keep(err)
	identity, err := enrich.NewIdentity(cfg, now, rand.Reader)
	keep(err)
	attribution, err := enrich.NewAttribution(cfg)
	keep(err)
	geo, err := enrich.NewGeo(cfg)
	keep(err)
	if geo != nil {
		st.closers = append(st.closers, geo.Close)
	}
	// One daily salt per process, or per fleet when replicas share a Redis:
	// IP hashes and cookieless ids of a day agree, and nothing links two
	// days once the salt rotated.
	store, err := sharedSaltStore(cfg, log)
	keep(err)
	if store != nil {
		st.closers = append(st.closers, func() error { store.Close(); return nil })
	}
	salts := enrich.NewDailySalt(saltStore(store), now, nil)
	privacy, err := enrich.NewPrivacy(cfg, salts, now)
	keep(err)
	if identity != nil {
		identity.UseDailySalt(salts)
	}
	bot, err := enrich.NewBot(cfg)
	keep(err)
	naming, err := enrich.NewNaming(cfg)
	keep(err)
	validation, err := enrich.NewValidation(cfg)
	keep(err)
	join, err := enrich.NewJoin(cfg)
	keep(err)
	if join != nil {
		st.closers = append(st.closers, func() error { join.Close(); return nil })
	}
	dedup, err := enrich.NewDedup(cfg, enrich.DedupOptions{Index: index, Log: log, Now: now})
	keep(err)
	if dedup != nil {
		st.closers = append(st.closers, dedup.Close)
	}
	if err := errors.Join(errs...); err != nil {
		_ = st.close()
		return nil, err
	}
	st.identity, st.privacy, st.dedup, st.join = identity, privacy, dedup, join
	st.pipeline = enrich.NewPipeline(now,
		consent, identity, attribution, geo, privacy, bot, naming, validation, join, dedup)
	return st, nil
}
