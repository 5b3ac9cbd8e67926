// Command sidetrack is a first-party tracking sidecar: a reverse proxy on
// the shop's own domain that passes shop traffic through and turns tracking
// traffic into one canonical, enriched, privacy-safe event stream.
//
// Usage:
//
//	sidetrack [-config FILE] [-dev] [-demo]   run
//	sidetrack config check FILE               validate a config file (exit 0/1)
//	sidetrack config print [-config FILE]     show the effective config, secrets masked
//	sidetrack healthcheck [-config FILE]      probe the admin port (exit 0/1)
//	sidetrack dlq list|show|replay|purge      dead-letter queues (see docs/delivery.md)
//	sidetrack quarantine list|show            quarantined events
//	sidetrack forward [-config FILE]          deliver from the Kafka spool
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is main without process globals, so tests can call it.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "config":
			return configCmd(args[1:], env, stdout, stderr)
		case "healthcheck":
			return healthcheckCmd(args[1:], env, stdout, stderr)
		case "dlq":
			return dlqCmd(args[1:], env, stdout, stderr)
		case "quarantine":
			return quarantineCmd(args[1:], env, stdout, stderr)
		case "forward":
			return forwardCmd(ctx, args[1:], env, stderr)
		case "help", "-h", "-help", "--help":
			usage(stdout)
			return 0
		}
	}
	fs := flag.NewFlagSet("sidetrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	cfgPath := fs.String("config", "", "config file (YAML); default: embedded defaults")
	dev := fs.Bool("dev", false, "development mode: plain-http cookies, generated secret, console logs")
	demo := fs.Bool("demo", false, "also start a small built-in shop origin (implies -dev)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sidetrack: unexpected argument %q\n", fs.Arg(0))
		usage(stderr)
		return 2
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	err := serve(ctx, serveOptions{
		configPath: *cfgPath,
		dev:        *dev || *demo,
		demo:       *demo,
		env:        env,
		stdout:     stdout,
		stderr:     stderr,
		signals:    sigs,
	})
	if err != nil {
		fmt.Fprintf(stderr, "sidetrack: %v\n", err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `sidetrack: first-party tracking sidecar

Usage:
  sidetrack [-config FILE] [-dev] [-demo]   run the proxy
  sidetrack config check FILE               validate a config file (exit 0 valid, 1 invalid)
  sidetrack config print [-config FILE]     print the effective config, secrets masked
  sidetrack healthcheck [-config FILE]      probe the admin port's /healthz (exit 0/1)
  sidetrack dlq list [-config FILE]         dead letters per destination
  sidetrack dlq show DEST | replay DEST [-since 24h] | purge DEST
  sidetrack quarantine list | show          events that failed validation on browser routes
  sidetrack forward [-config FILE]          deliver from the Kafka spool (spool.type kafka;
                                            admin port only, see docs/deployment.md)

Environment: SIDETRACK_<KEY> overrides a config key, "__" between levels
(SIDETRACK_SPOOL__MAX_BYTES=8GiB); <KEY>_FILE reads a secret from a file.
`)
}
