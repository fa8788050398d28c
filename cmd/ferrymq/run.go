package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/ferrymq/ferrymq/broker"
)

// runOptions are the flags of "ferrymq run".
type runOptions struct {
	configFile string
	listen     listenFlag
	dataDir    string
	durability string
	level      levelFlag
}

// parseRunFlags parses the flags of "run". On -h it prints help and
// returns code 0; on a bad flag it returns code 2; in both cases o is nil.
func parseRunFlags(args []string, stdout, stderr io.Writer) (o *runOptions, code int) {
	o = &runOptions{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	fs.StringVar(&o.configFile, "c", "", "")
	fs.StringVar(&o.configFile, "config", "", "")
	fs.Var(&o.listen, "listen", "")
	fs.StringVar(&o.dataDir, "data-dir", "", "")
	fs.StringVar(&o.durability, "durability", "", "")
	fs.Var(&o.level, "log-level", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: ferrymq run [flags]\n\n%s", runFlagsUsage)
			return nil, 0
		}
		fmt.Fprintf(stderr, "Usage: ferrymq run [flags]\n\n%s", runFlagsUsage)
		return nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferrymq run: unexpected argument %q\nUsage: ferrymq run [flags]\n\n%s", fs.Arg(0), runFlagsUsage)
		return nil, 2
	}
	return o, 0
}

// buildConfig makes the broker configuration: built-in defaults, then the
// configuration file (if any), then the flags. It returns every problem
// found, each positioned in the file or naming the flag it came from.
func buildConfig(o *runOptions) (config, []configError) {
	var cfg config
	var file *configFile
	var decodeErrs []configError
	if o.configFile != "" {
		cfg, file, decodeErrs = loadConfigFile(o.configFile)
		if file.root == nil && len(decodeErrs) > 0 {
			return cfg, decodeErrs // unreadable, or not YAML at all
		}
	}
	if len(o.listen) > 0 {
		cfg.Listeners = make([]broker.Listener, len(o.listen))
		for i, addr := range o.listen {
			cfg.Listeners[i] = broker.Listener{Address: addr}
		}
	}
	if o.dataDir != "" {
		cfg.Storage.Dir = o.dataDir
	}
	if o.durability != "" {
		cfg.Storage.Durability = o.durability
	}
	source := func(path string) (string, int) {
		switch {
		case len(o.listen) > 0 && related(path, "listeners"):
			return "--listen", 0
		case o.dataDir != "" && related(path, "storage.dir"):
			return "--data-dir", 0
		case o.durability != "" && related(path, "storage.durability"):
			return "--durability", 0
		case file != nil:
			return file.name, file.lineOf(path)
		}
		return "", 0
	}
	errs := validate(&cfg, source)
	for i, e := range errs {
		if e.Source == "--listen" && strings.HasSuffix(e.Path, ".allow_anonymous") {
			errs[i].Msg += " (--listen cannot set it: use a configuration file)"
		}
	}
	return cfg, mergeErrors(decodeErrs, errs)
}

// run is "ferrymq run": start the broker and serve until ctx is cancelled
// (SIGINT or SIGTERM), then shut down gracefully.
func (a *app) run(ctx context.Context, args []string) int {
	o, code := parseRunFlags(args, a.stdout, a.stderr)
	if o == nil {
		return code
	}
	cfg, errs := buildConfig(o)
	if len(errs) > 0 {
		printErrors(a.stderr, errs)
		return 1
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: o.level.level}))
	srv, err := startBroker(cfg, log)
	if err != nil {
		// One line each, e.g. "ferrymq: listen tcp 127.0.0.1:1883: bind:
		// address already in use".
		for _, e := range flattenErrors(err) {
			fmt.Fprintf(a.stderr, "ferrymq: %s\n", oneLine(e))
		}
		return 1
	}
	// broker.Server.Start logs one "listening" addr=... line per listener;
	// this line sums up, with the actual ports when port 0 was asked for.
	var addrs []string
	for _, addr := range srv.Addrs() {
		addrs = append(addrs, addr.String())
	}
	configName := o.configFile
	if configName == "" {
		configName = "(built-in defaults)"
	}
	log.Info("ferrymq started", "addrs", strings.Join(addrs, ","), "version", version, "config", configName,
		"data_dir", cfg.Storage.Dir, "durability", cfg.Storage.Durability)
	notify := func(state string) {
		if err := sdNotify(a.getenv("NOTIFY_SOCKET"), state); err != nil {
			log.Warn("sd_notify failed", "state", state, "err", err)
		}
	}
	notify("READY=1")

	<-ctx.Done()
	log.Info("shutting down", "cause", context.Cause(ctx), "timeout", a.shutdownTimeout)
	notify("STOPPING=1")
	sctx, cancel := context.WithTimeout(context.Background(), a.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown did not complete", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// oneLine flattens a (possibly joined) error onto one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
