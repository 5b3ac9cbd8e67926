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
	"github.com/sidetrack/sidetrack/quality"
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
	// Dedup confirms its reservations once the spool has the keys; the
	// stage is built after the spool (which it reads), so it is bound late,
	// before the proxy serves the first append.
	var dedup *enrich.Dedup
	committed := func(keys [][16]byte) { dedup.Commit(keys) }
	// spool is nil with spool.type kafka: the edge then only appends, and
	// `sidetrack forward` delivers.
	sink, spool, err := openSink(cfg, log, pool, openIP, committed)
	if err != nil {
		return err
	}
	// The spool is closed once: by the graceful shutdown (flushing within
	// shutdown_timeout), or on the way out after an error or a second
	// signal, when shutdown's context is already cancelled and Close stops
	// at once, leaving undelivered events for the next start.
	var closeOnce sync.Once
	closeSpool := func(ctx context.Context) {
		closeOnce.Do(func() {
			if err := sink.Close(ctx); err != nil {
				log.Warn("spool close", zap.Error(err))
			}
		})
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
		defer cancel()
		closeSpool(ctx)
	}()

	st, err := buildPipeline(cfg, log, nil, idIndex(spool))
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
	if spool != nil {
		if err := spool.Start(runCtx); err != nil {
			return err
		}
	}

	// The live trace (debug.trace_events: 0 turns it off) watches every
	// event; it records only while someone looks at /debug/events.
	// Data quality sees every decoded event; in Kafka mode the DLQ lives
	// with the forwarders, so its depth is theirs to report.
	var qopts []quality.Option
	if spool != nil {
		qopts = append(qopts, quality.WithDLQDepth(spool.DLQDepth))
	}
	dq := quality.New(cfg, qopts...)
	observers := []proxy.EventObserver{dq}
	var tracer *proxy.Tracer
	if cfg.Debug.TraceEvents > 0 {
		// With spool.type kafka the forwarders decide admission when they
		// read a record, so the edge's trace shows no destinations.
		var x proxy.Explainer
		if spool != nil {
			x = spoolExplainer{spool}
		}
		tracer = proxy.NewTracer(cfg.Debug, x, nil)
		observers = append(observers, tracer)
	}
	srv, err := proxy.New(cfg, log, proxy.Options{
		Ready:     sink,
		Sink:      sink,
		Pipeline:  st.pipeline,
		Events:    pool,
		Pages:     st.identity,
		Metrics:   []proxy.MetricsWriter{sink.Metrics(), dedupMetrics(st.dedup), joinMetrics(st.join), dq.Metrics()},
		Observers: observers,
	})
	if err != nil {
		return err
	}
	srv.HandleTrace(tracer)
	srv.HandleStatus(statusSources(spool, dq))
	if spool != nil {
		srv.HandleDeadLetters(spool)
	}

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
		fmt.Fprintf(o.stdout, "\nsidetrack demo is running.\n  Shop (through sidetrack): http://%s/\n  Events written to:        %s\n  Metrics:                  http://%s/metrics\n  Status:                   http://%s/status\n\n",
			displayAddr(ln.Addr()), firstNDJSONPath(cfg), displayAddr(adminLn.Addr()), displayAddr(adminLn.Addr()))
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

// statusSources are the parts of /status.json that delivery and the
// data-quality tracker own.
func statusSources(spool *forward.Spool, dq *quality.Tracker) proxy.StatusSources {
	src := proxy.StatusSources{Quality: func() (any, error) { return dq.Snapshot(), nil }}
	// With spool.type kafka delivery and quarantine live with the
	// forwarders and on Kafka topics; the edge's page shows ingest and
	// data quality.
	if spool != nil {
		src.Delivery = func() (any, error) { return spool.Status(), nil }
		src.Quarantine = func() (any, error) { return spool.RecentQuarantine(20) }
	}
	return src
}
