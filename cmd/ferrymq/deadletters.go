package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/broker"
	"github.com/ferrymq/ferrymq/persist"
)

const deadLettersUse = "Usage: ferrymq dead-letters [-c FILE] [--data-dir DIR] list|replay BRIDGE\n"

// deadLetters is "ferrymq dead-letters list|replay BRIDGE": it opens the
// store of a stopped broker (the configuration file names its directory)
// and lists the bridge's dead letters, or moves them back to the end of
// its outbox so that the next run sends them again.
func (a *app) deadLetters(args []string) int {
	fs := flag.NewFlagSet("dead-letters", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {}
	o := &runOptions{}
	fs.StringVar(&o.configFile, "c", "", "")
	fs.StringVar(&o.configFile, "config", "", "")
	fs.StringVar(&o.dataDir, "data-dir", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.stdout, deadLettersUse)
			return 0
		}
		fmt.Fprint(a.stderr, deadLettersUse)
		return 2
	}
	if fs.NArg() != 2 || (fs.Arg(0) != "list" && fs.Arg(0) != "replay") {
		fmt.Fprint(a.stderr, deadLettersUse)
		return 2
	}
	cfg, errs := buildConfig(o)
	if len(errs) > 0 {
		printErrors(a.stderr, errs)
		return 1
	}
	if cfg.Storage.Durability == broker.DurabilityMemory {
		fmt.Fprintln(a.stderr, "ferrymq dead-letters: storage.durability is memory: nothing is kept on disk")
		return 1
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := persist.Open(persist.Options{Dir: cfg.Storage.Dir, Durability: persist.Sync, Logger: log})
	if err != nil {
		fmt.Fprintf(a.stderr, "ferrymq dead-letters: %s (is the broker still running?)\n", oneLine(err))
		return 1
	}
	defer s.Close()
	name := fs.Arg(1)
	if fs.Arg(0) == "replay" {
		n, err := bridge.ReplayDeadLetters(s, name, time.Now())
		if err != nil {
			fmt.Fprintf(a.stderr, "ferrymq dead-letters: %s\n", oneLine(err))
			return 1
		}
		fmt.Fprintf(a.stdout, "%d dead letters of bridge %s moved back to its outbox\n", n, name)
		return 0
	}
	n := 0
	err = bridge.ListDeadLetters(s, name, func(d bridge.DeadLetter) bool {
		n++
		fmt.Fprintf(a.stdout, "%s seq=%d topic=%s bytes=%d payload=%s\n",
			d.Time.UTC().Format(time.RFC3339), d.Seq, strconv.Quote(d.Msg.Topic), d.Bytes, preview(d.Msg.Payload))
		return true
	})
	if err != nil {
		fmt.Fprintf(a.stderr, "ferrymq dead-letters: %s\n", oneLine(err))
		return 1
	}
	fmt.Fprintf(a.stdout, "%d dead letters\n", n)
	return 0
}

// preview quotes the start of a payload.
func preview(p []byte) string {
	const n = 64
	if len(p) > n {
		return strconv.Quote(string(p[:n])) + "..."
	}
	return strconv.Quote(string(p))
}
