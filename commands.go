package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// configCmd implements `sidetrack config check FILE` and
// `sidetrack config print [-config FILE]`.
func configCmd(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: sidetrack config check FILE | sidetrack config print [-config FILE]")
		return 2
	}
	switch args[0] {
	case "check":
		fs := flag.NewFlagSet("config check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "config file")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *path == "" && fs.NArg() == 1 {
			*path = fs.Arg(0)
		}
		if *path == "" {
			fmt.Fprintln(stderr, "usage: sidetrack config check FILE")
			return 2
		}
		cfg, err := config.Load(*path, env)
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: invalid\n%v\n", *path, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return 0
	case "print":
		fs := flag.NewFlagSet("config print", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "config file (default: embedded defaults)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *path == "" && fs.NArg() == 1 {
			*path = fs.Arg(0)
		}
		cfg, err := config.Load(*path, env)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := cfg.Print(stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "sidetrack config: unknown command %q (want check or print)\n", args[0])
	return 2
}

// healthcheckCmd probes the admin port's /healthz, for container images
// without curl. It exits 0 when the answer is 200.
func healthcheckCmd(args, env []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default: embedded defaults and env)")
	addr := fs.String("addr", "", "admin address to probe (default: admin.listen)")
	timeout := fs.Duration("timeout", 3*time.Second, "probe timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" {
		cfg, err := config.Load(*path, env)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		*addr = cfg.Admin.Listen
	}
	if err := probe(*addr, *timeout); err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "healthy")
	return 0
}

func probe(addr string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
