package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ferrymq/ferrymq/broker"
	"github.com/ferrymq/ferrymq/persist"
	"github.com/ferrymq/ferrymq/session"
)

// openStore opens the session store that st asks for: none for
// durability memory, else Badger in st.Dir.
func openStore(st broker.Storage, bridges int, log *slog.Logger) (session.Store, error) {
	if st.Durability == broker.DurabilityMemory {
		if bridges == 0 {
			return session.Memory{}, nil
		}
		// Bridges need their outbox logs: kept in RAM (a Badger store
		// without files), so they last until the process ends.
		s, err := persist.Open(persist.Options{Durability: persist.Memory, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("opening the in-memory store: %w", err)
		}
		return s, nil
	}
	d, err := persist.ParseDurability(st.Durability)
	if err != nil {
		return nil, err
	}
	refuse := st.OnCorruption == broker.CorruptionRefuse
	// A damaged store moved aside is logged (at error level, with its new
	// name) by persist.
	s, _, err := persist.OpenOrQuarantineCheck(storeOptions(st, d, log), refuse, readAll)
	if err != nil {
		if errors.Is(err, persist.ErrStoreCorrupt) {
			return nil, fmt.Errorf("%w [storage.on_corruption: refuse]", err)
		}
		return nil, fmt.Errorf("opening the session store: %w", err)
	}
	return s, nil
}

// readAll decodes every stored session and retained message, so that a
// damaged record is found before the broker starts on it.
func readAll(s *persist.Store) error {
	if err := s.Load(func(*session.Saved) error { return nil }); err != nil {
		return err
	}
	return s.LoadRetained(func(*session.Message) error { return nil })
}

func storeOptions(st broker.Storage, d persist.Durability, log *slog.Logger) persist.Options {
	return persist.Options{
		Dir:           st.Dir,
		Durability:    d,
		BatchInterval: st.SyncInterval,
		MaxDisk:       st.MaxDisk,
		MinFree:       st.MinFree,
		Logger:        log,
	}
}

// startBroker opens the store, builds the server and its bridges and
// starts them (the server restores the stored sessions; each bridge
// forwards the backlog left by an earlier run).
func startBroker(cfg config, log *slog.Logger) (*broker.Server, error) {
	store, err := openStore(cfg.Storage, len(cfg.Bridges), log)
	if err != nil {
		return nil, err
	}
	srv, err := broker.New(cfg.Config, broker.Options{Logger: log, Store: store})
	if err != nil {
		store.Close()
		return nil, err
	}
	bridges, err := buildBridges(cfg.Bridges, store, srv, log)
	if err != nil {
		store.Close()
		return nil, err
	}
	if err := srv.Start(); err != nil {
		store.Close()
		return nil, err
	}
	for _, b := range bridges {
		b.Start()
	}
	return srv, nil
}
