// Package persist will hold the Badger session store (next issue).
package persist
