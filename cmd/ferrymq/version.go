package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// versionString is "ferrymq <version> (<go version>, <GOOS>/<GOARCH>)".
func versionString() string {
	v := version
	if v == "dev" {
		// "go install github.com/ferrymq/ferrymq/cmd/ferrymq@v1.2.3" records
		// the module version.
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("ferrymq %s (%s, %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
