package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
)

// listenFlag collects repeated --listen values.
type listenFlag []string

func (l *listenFlag) String() string { return strings.Join(*l, ",") }

func (l *listenFlag) Set(s string) error {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("want host:port, e.g. 127.0.0.1:1883 or [::1]:1883")
	}
	*l = append(*l, s)
	return nil
}

// levelFlag is --log-level: debug, info, warn or error.
type levelFlag struct{ level slog.Level }

func (f *levelFlag) String() string { return strings.ToLower(f.level.String()) }

func (f *levelFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug":
		f.level = slog.LevelDebug
	case "info":
		f.level = slog.LevelInfo
	case "warn", "warning":
		f.level = slog.LevelWarn
	case "error":
		f.level = slog.LevelError
	default:
		return fmt.Errorf("want debug, info, warn or error")
	}
	return nil
}
