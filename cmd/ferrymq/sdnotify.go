package main

import (
	"net"
)

// sdNotify sends a state ("READY=1", "STOPPING=1") to systemd's notify
// socket (sd_notify(3)); socket is $NOTIFY_SOCKET. It does nothing when
// socket is empty. A name starting with "@" is an abstract socket, which
// Go's net package maps for us.
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
