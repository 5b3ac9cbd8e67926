package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/kafkaspool"
	"github.com/sidetrack/sidetrack/proxy"
)

// forwardCmd runs the forward process mode (docs/deployment.md): no
// listener for shoppers, only the admin port; one Kafka consumer group per
// destination feeding the same delivery core as the single process.
func forwardCmd(ctx context.Context, args, env []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("sidetrack forward", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML); spool.type must be kafka")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sidetrack forward: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := runForwarder(ctx, *cfgPath, env, stderr, sigs); err != nil {
		fmt.Fprintf(stderr, "sidetrack forward: %v\n", err)
		return 1
	}
	return 0
}

// drainState backs the forwarder's /readyz: ready until shutdown begins.
type drainState struct{ draining chan struct{} }

func (d drainState) Ready() error {
	select {
	case <-d.draining:
		return errors.New("forwarder is shutting down")
	default:
		return nil
	}
}

func runForwarder(ctx context.Context, cfgPath string, env []string, stderr io.Writer, signals <-chan os.Signal) error {
	cfg, err := loadConfig(cfgPath, env, false, false)
	if err != nil {
		return err
	}
	if cfg.Spool.Type != "kafka" {
		return errors.New("spool.type must be kafka: the forwarder consumes the spool topic (docs/deployment.md)")
	}
	if len(cfg.Destinations) == 0 {
		return errors.New("no destinations configured: nothing to forward")
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	// Adapters that send a full IP open the sealed one with the keys
	// derived from secrets, as in the single process.
	privacy, err := enrich.NewPrivacy(cfg, enrich.NewDailySalt(nil, time.Now, nil), time.Now)
	if err != nil {
		return err
	}
	openIP := func(sealed string) (netip.Addr, error) { return privacy.OpenIP(sealed) }
	dests, err := forward.NewDestinations(cfg, log, openIP)
	if err != nil {
		return err
	}
	set := metrics.NewSet()
	sources := make([]*kafkaspool.Source, 0, len(dests))
	closeSources := func() {
		for _, s := range sources {
			s.Close()
		}
	}
	logs := make([]forward.Log, 0, len(dests))
	for _, d := range cfg.Destinations {
		src, err := kafkaspool.NewSource(cfg, d.Name, log, kafkaspool.WithMetrics(set))
		if err != nil {
			closeSources()
			for _, a := range dests {
				_ = a.Close()
			}
			return err
		}
		sources = append(sources, src)
		logs = append(logs, src)
	}
	defer closeSources()
	feed, err := forward.NewFeed(cfg, dests, logs, log, nil)
	if err != nil {
		for _, a := range dests {
			_ = a.Close()
		}
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := feed.Start(runCtx); err != nil {
		return err
	}
	closed := false
	closeFeed := func(ctx context.Context) {
		if !closed {
			closed = true
			if err := feed.Close(ctx); err != nil {
				log.Warn("closing delivery", zap.Error(err))
			}
		}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
		defer cancel()
		closeFeed(ctx)
	}()

	ready := drainState{draining: make(chan struct{})}
	srv, err := proxy.New(cfg, log, proxy.Options{
		Ready:   ready,
		Metrics: []proxy.MetricsWriter{feed.Metrics(), set},
	})
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeAdmin(adminLn) }()
	names := make([]string, len(cfg.Destinations))
	for i, d := range cfg.Destinations {
		names[i] = kafkaspool.Group(cfg.Spool.Group, d.Name)
	}
	log.Info("sidetrack forwarder started",
		zap.String("admin", adminLn.Addr().String()),
		zap.String("topic", cfg.Spool.Topic),
		zap.Strings("groups", names))

	select {
	case <-ctx.Done():
	case sig := <-signals:
		log.Info("shutting down", zap.String("signal", sig.String()))
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("admin server: %w", err)
		}
	}
	close(ready.draining)
	// Deliver what is held within shutdown_timeout; what is not resolved
	// stays uncommitted in Kafka for the next owner of its partition.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	flushed := make(chan struct{})
	go func() { closeFeed(sctx); close(flushed) }()
	select {
	case <-flushed:
	case sig := <-signals:
		log.Warn("second signal, exiting at once", zap.String("signal", sig.String()))
		return errors.New("interrupted during shutdown")
	}
	closeSources()
	sources = nil
	if err := srv.ShutdownAdmin(sctx); err != nil {
		log.Warn("admin shutdown incomplete", zap.Error(err))
	}
	log.Info("sidetrack forwarder stopped")
	return nil
}
