package main

import (
	"errors"
	"flag"
	"fmt"
)

// checkConfig is "ferrymq check-config -c FILE": load and validate FILE;
// print "FILE: ok" and return 0, or print every error as
// "FILE:LINE: path: message" and return 1.
func (a *app) checkConfig(args []string) int {
	const use = "Usage: ferrymq check-config -c FILE\n"
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {}
	var file string
	fs.StringVar(&file, "c", "", "")
	fs.StringVar(&file, "config", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.stdout, use)
			return 0
		}
		fmt.Fprint(a.stderr, use)
		return 2
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0) // "ferrymq check-config FILE" works too
	} else if fs.NArg() > 0 {
		fmt.Fprintf(a.stderr, "ferrymq check-config: unexpected argument %q\n%s", fs.Arg(0), use)
		return 2
	}
	if file == "" {
		fmt.Fprintf(a.stderr, "ferrymq check-config: -c FILE is required\n%s", use)
		return 2
	}
	if _, errs := buildConfig(&runOptions{configFile: file}); len(errs) > 0 {
		printErrors(a.stderr, errs)
		return 1
	}
	fmt.Fprintf(a.stdout, "%s: ok\n", file)
	return 0
}
