package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/proxy"
)

// serveOptions are the run command's inputs.
type serveOptions struct {
	configPath string
	dev, demo  bool
	env        []string
	stdout     io.Writer
	stderr     io.Writer
	// signals delivers SIGINT/SIGTERM; the first starts a graceful
	// shutdown, a second one exits at once.
	signals <-chan os.Signal
	// ready, when set, receives the bound addresses once serving (tests).
	ready func(public, admin net.Addr)
}

// loadConfig loads and validates the config for the run command, applying
// what -dev and -demo imply.
func loadConfig(path string, env []string, dev, demo bool) (*config.Config, error) {
	cfg, err := config.Load(path, env)
	if err != nil {
		return nil, err
	}
	cfg.Dev = dev
	if dev && len(cfg.Secrets) == 0 {
		// A fresh secret per run: cookies minted in dev do not survive a
		// restart, which is the point of refusing this outside -dev.
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		cfg.Secrets = []config.Secret{config.Secret(hex.EncodeToString(b[:]))}
	}
	if dev {
		cfg.Cookies.Secure = false
		if cfg.Log.Format == "json" {
			cfg.Log.Format = "console"
		}
	}
	if demo {
		granted := config.Purposes{Analytics: "granted", Ads: "granted", AdUserData: "granted", AdPersonalization: "granted"}
		cfg.Consent.Default = granted
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// serve runs sidetrack until a signal or a fatal listener error, then shuts
// down in the order of DESIGN §1.
func serve(ctx context.Context, o serveOptions) error {
	cfg, err := loadConfig(o.configPath, o.env, o.dev, o.demo)
	if err != nil {
		return err
	}
	var demoShop *demoOrigin
	if o.demo {
		demoShop, err = startDemoOrigin()
		if err != nil {
			return fmt.Errorf("demo origin: %w", err)
		}
		defer demoShop.Close()
		cfg.Origin = demoShop.URL()
		cfg.Ingest.Forms = append(cfg.Ingest.Forms, demoForm())
	}
	log, err := newLogger(cfg, o.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	pool := &enrich.EventPool{}
	// Adapters that need a sealed IP (Meta CAPI, GA4) open it with the
	// privacy stage's keys; the stage is built after the spool, which backs
	// dedup, so the opener is bound late. It is only called once delivery
	// runs.
	var privacy *enrich.Privacy
	openIP := func(sealed string) (netip.Addr, error) { return privacy.OpenIP(sealed) }
	dests, err := forward.NewDestinations(cfg, log, openIP)
	if err != nil {
		return err
	}
	// Dedup confirms its reservations once the spool has the keys; the
	// stage is built after the spool (which it reads), so it is bound late,
	// before the proxy serves the first append.
	var dedup *enrich.Dedup
	committed := forward.WithCommitted(func(keys [][16]byte) { dedup.Commit(keys) })
	spool, err := forward.Open(cfg, dests, log, pool, committed)
	if err != nil {
		for _, d := range dests {
			_ = d.Close()
		}
		return err
	}
	// The spool is closed once: by the graceful shutdown (flushing within
	// shutdown_timeout), or on the way out after an error or a second
	// signal, when shutdown's context is already cancelled and Close stops
	// at once, leaving undelivered events for the next start.
	var closeOnce sync.Once
	closeSpool := func(ctx context.Context) {
		closeOnce.Do(func() {
			if err := spool.Close(ctx); err != nil {
				log.Warn("spool close", zap.Error(err))
			}
		})
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
		defer cancel()
		closeSpool(ctx)
	}()

	st, err := buildPipeline(cfg, log, nil, spool)
	if err != nil {
		return err
	}
	privacy, dedup = st.privacy, st.dedup
	var bloomBytes uint64
	if dedup != nil {
		bloomBytes = dedup.Stats().BloomBytes
	}
	limit, derived := applyMemoryLimit(o.env, memoryLimit(cfg, bloomBytes))
	log.Info("memory limit", zap.String("soft_limit", config.Size(limit).String()), zap.Bool("from_config", derived))
	defer func() {
		if err := st.close(); err != nil {
			log.Error("closing enrichment stages", zap.Error(err))
		}
	}()
	runCtx, stopDelivery := context.WithCancel(context.Background())
	defer stopDelivery()
	if err := spool.Start(runCtx); err != nil {
		return err
	}

	srv, err := proxy.New(cfg, log, proxy.Options{
		Ready:    spool,
		Sink:     spool,
		Pipeline: st.pipeline,
		Events:   pool,
		Pages:    st.identity,
		Metrics:  []proxy.MetricsWriter{spool.Metrics(), dedupMetrics(st.dedup)},
	})
	if err != nil {
		return err
	}
	srv.HandleDeadLetters(spool)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- srv.ServeAdmin(adminLn) }()

	log.Info("sidetrack started",
		zap.String("listen", ln.Addr().String()),
		zap.String("admin", adminLn.Addr().String()),
		zap.String("origin", cfg.Origin),
		zap.Bool("dev", cfg.Dev))
	if o.demo {
		fmt.Fprintf(o.stdout, "\nsidetrack demo is running.\n  Shop (through sidetrack): http://%s/\n  Events written to:        %s\n  Metrics:                  http://%s/metrics\n\n",
			displayAddr(ln.Addr()), firstNDJSONPath(cfg), displayAddr(adminLn.Addr()))
	}
	if o.ready != nil {
		o.ready(ln.Addr(), adminLn.Addr())
	}

	select {
	case <-ctx.Done():
	case sig := <-o.signals:
		log.Info("shutting down", zap.String("signal", sig.String()), zap.Duration("drain_delay", cfg.DrainDelay.D()))
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	return shutdown(cfg, srv, o.signals, log, closeSpool)
}

// shutdown turns /readyz to 503, waits drain_delay so load balancers stop
// sending, stops accepting and finishes in-flight requests within
// shutdown_timeout. A second signal exits at once.
func shutdown(cfg *config.Config, srv *proxy.Server, signals <-chan os.Signal, log *zap.Logger, flush func(context.Context)) error {
	srv.Drain()
	select {
	case <-time.After(cfg.DrainDelay.D()):
	case sig := <-signals:
		log.Warn("second signal, exiting at once", zap.String("signal", sig.String()))
		return errors.New("interrupted during shutdown")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			log.Warn("shutdown incomplete", zap.Error(err))
		}
	case sig := <-signals:
		log.Warn("second signal, exiting at once", zap.String("signal", sig.String()))
		return errors.New("interrupted during shutdown")
	}
	// No request is in flight any more: flush destinations within what is
	// left of shutdown_timeout; what is not delivered stays in the spool
	// for the next start.
	flushed := make(chan struct{})
	go func() { flush(ctx); close(flushed) }()
	select {
	case <-flushed:
	case sig := <-signals:
		log.Warn("second signal, exiting at once", zap.String("signal", sig.String()))
		return errors.New("interrupted during shutdown")
	}
	if err := srv.ShutdownAdmin(ctx); err != nil {
		log.Warn("admin shutdown incomplete", zap.Error(err))
	}
	log.Info("sidetrack stopped")
	return nil
}

func displayAddr(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok && (ta.IP == nil || ta.IP.IsUnspecified()) {
		return fmt.Sprintf("localhost:%d", ta.Port)
	}
	return a.String()
}

func firstNDJSONPath(cfg *config.Config) string {
	for _, d := range cfg.Destinations {
		if d.Type == "ndjson" {
			return d.Options.Path
		}
	}
	return "(none)"
}
