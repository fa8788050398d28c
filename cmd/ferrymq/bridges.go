package main

import (
	"fmt"
	"log/slog"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/bridge/amqp"
	"github.com/ferrymq/ferrymq/bridge/mqtt"
	"github.com/ferrymq/ferrymq/broker"
	"github.com/ferrymq/ferrymq/session"
)

// buildBridges builds the configured bridges (validated, defaults
// applied) on the store's outbox logs and attaches them to srv: srv offers
// them every publish and stops them, before closing the store, in
// Shutdown. They start forwarding when Start is called on each.
func buildBridges(cfgs []bridge.Config, store session.Store, srv *broker.Server, log *slog.Logger) ([]*bridge.Bridge, error) {
	if len(cfgs) == 0 {
		return nil, nil
	}
	bl, ok := store.(bridge.Log)
	if !ok {
		return nil, fmt.Errorf("bridges need the persistent store")
	}
	var out []*bridge.Bridge
	for _, c := range cfgs {
		dial, err := dialer(c, log)
		if err != nil {
			return nil, err
		}
		b, err := bridge.New(c, bridge.Options{Log: bl, Dial: dial, Inject: srv.Inject, Logger: log})
		if err != nil {
			return nil, err
		}
		srv.AddOutlet(b)
		srv.OnStop(b.Stop)
		out = append(out, b)
	}
	return out, nil
}

// dialer returns the function that makes a new upstream link of bridge c.
func dialer(c bridge.Config, log *slog.Logger) (func() bridge.Upstream, error) {
	ep, err := c.Upstream.Parse()
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", c.Name, err)
	}
	if ep.AMQP() {
		cfg := amqp.Config{Name: c.Name, URL: ep.URL(), Exchange: c.Exchange, Queue: c.DownlinkQueue()}
		for _, r := range c.Receive {
			cfg.ReceiveKeys = append(cfg.ReceiveKeys, r.From)
		}
		return func() bridge.Upstream { return amqp.New(cfg, log) }, nil
	}
	cfg := mqtt.Config{Name: c.Name, URL: ep.URL(), ClientID: c.ClientID}
	for _, r := range c.Receive {
		cfg.Receive = append(cfg.Receive, mqtt.Subscription{Filter: r.From, QoS: *r.QoS})
	}
	return func() bridge.Upstream { return mqtt.New(cfg, log) }, nil
}
