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
func openStore(st broker.Storage, log *slog.Logger) (session.Store, error) {
	if st.Durability == broker.DurabilityMemory {
		return session.Memory{}, nil
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

// startBroker opens the store, builds the server and starts it (which
// restores the stored sessions).
func startBroker(cfg broker.Config, log *slog.Logger) (*broker.Server, error) {
	store, err := openStore(cfg.Storage, log)
	if err != nil {
		return nil, err
	}
	srv, err := broker.New(cfg, broker.Options{Logger: log, Store: store})
	if err != nil {
		store.Close()
		return nil, err
	}
	if err := srv.Start(); err != nil {
		store.Close()
		return nil, err
	}
	return srv, nil
}
