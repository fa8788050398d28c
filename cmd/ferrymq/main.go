// Command ferrymq runs the ferrymq MQTT broker.
//
// It is the only part of ferrymq that reads files, flags, the environment
// or signals; it builds a broker.Config from them and wires the server.
// See "ferrymq help" and the README for the command line.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// app is what a command may touch of the outside world, so that tests can
// run commands in-process.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// shutdownTimeout bounds Server.Shutdown after a signal.
	shutdownTimeout time.Duration
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		// A second signal gets the default action and ends the process
		// at once, should a graceful shutdown hang.
		signal.Stop(sigs)
		cancel(fmt.Errorf("received %v", s))
	}()
	a := &app{
		stdout:          os.Stdout,
		stderr:          os.Stderr,
		getenv:          os.Getenv,
		shutdownTimeout: 5 * time.Second,
	}
	os.Exit(a.main(ctx, os.Args[1:]))
}

// main dispatches to a subcommand and returns the exit status: 0 success,
// 1 failure, 2 usage error. ctx is cancelled to ask "run" to stop.
func (a *app) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		return a.run(ctx, nil)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return a.run(ctx, rest)
	case "check-config":
		return a.checkConfig(rest)
	case "dead-letters":
		return a.deadLetters(rest)
	case "version", "-version", "--version":
		fmt.Fprintln(a.stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(a.stdout, usage)
		return 0
	}
	if strings.HasPrefix(cmd, "-") {
		// "ferrymq -c file" is "ferrymq run -c file".
		return a.run(ctx, args)
	}
	fmt.Fprintf(a.stderr, "ferrymq: unknown command %q\n\n%s", cmd, usage)
	return 2
}

const usage = `ferrymq: an MQTT 3.1.1/5.0 edge broker

Usage:
  ferrymq [run] [flags]           run the broker (the default command)
  ferrymq check-config -c FILE    check a configuration file, report every error
  ferrymq dead-letters [-c FILE] [--data-dir DIR] list|replay BRIDGE
                                  list the messages an upstream rejected for good,
                                  or move them back to the bridge's outbox
                                  (the broker must be stopped)
  ferrymq version                 print the version
  ferrymq help                    print this help

Flags of run:
` + runFlagsUsage + `
Flags of check-config:
  -c, --config FILE     the configuration file to check (required)

Exit status: 0 success, 1 failure (bad configuration, cannot listen,
shutdown timed out), 2 wrong usage.
`

const runFlagsUsage = `  -c, --config FILE     configuration file (YAML); without it the built-in
                        defaults apply (127.0.0.1:1883, anonymous allowed)
  --listen ADDR         listen on ADDR (host:port); repeat for several;
                        replaces the listeners of the configuration file
  --data-dir DIR        data directory (overrides storage.dir)
  --durability MODE     sync (default), batch or memory (overrides storage.durability)
  --log-level LEVEL     debug, info, warn or error (default info)
Flags take one dash or two (-listen or --listen). Flags override the file.
`
