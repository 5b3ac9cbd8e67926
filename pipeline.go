package main

import (
	"crypto/rand"
	"errors"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// buildPipeline assembles the enrichment stages in DESIGN §1's order
// (consent → identity → attribution → geo → privacy → bot → naming →
// validation → join → dedup) and returns a function that releases their
// resources.
// The identity stage is returned too: the proxy mints its cookies on
// pass-through HTML answers.
func buildPipeline(cfg *config.Config, now func() time.Time) (*enrich.Pipeline, *enrich.Identity, func(), error) {
	if now == nil {
		now = time.Now
	}
	var errs []error
	identity, err := enrich.NewIdentity(cfg, now, rand.Reader)
	errs = append(errs, err)
	attribution, err := enrich.NewAttribution(cfg)
	errs = append(errs, err)
	bot, err := enrich.NewBot(cfg)
	errs = append(errs, err)
	naming, err := enrich.NewNaming(cfg)
	errs = append(errs, err)
	validation, err := enrich.NewValidation(cfg)
	errs = append(errs, err)
	join, err := enrich.NewJoin(cfg)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		if join != nil {
			join.Close()
		}
		return nil, nil, nil, err
	}
	p := enrich.NewPipeline(now,
		identity,
		attribution,
		enrich.NewPrivacy(cfg),
		bot,
		naming,
		validation,
		join,
		enrich.NewDedup(cfg),
	)
	return p, identity, join.Close, nil
}
