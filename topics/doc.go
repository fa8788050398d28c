// Package topics is the subscription trie: subscribe, unsubscribe and match
// with +, #, $share groups and $-topic rules, the retained-message index, and
// topic/filter validation.
//
// Topic names and filters are split into levels at '/'. Levels are compared
// byte for byte, without any normalisation [MQTT-4.7.3-4]; leading, trailing
// and doubled separators produce empty levels that match only empty levels
// (or wildcards). Both Trie and Retained assume their inputs were accepted by
// ValidTopicName or ValidFilter; they never panic on other input, but what
// such input matches is unspecified.
//
// Wildcards:
//
//   - '+' matches exactly one level, which may be empty ("sport/+" matches
//     "sport/" but not "sport").
//   - '#' matches its parent level and any number of child levels
//     ("sport/#" matches "sport", "sport/" and "sport/tennis/player1").
//   - A filter whose first level is '+' or '#' does not match a topic name
//     starting with '$' [MQTT-4.7.2-1], so "#" does not see "$SYS/uptime"
//     but "$SYS/#" does.
//
// Shared subscriptions ("$share/<group>/<filter>") are kept in the same trie
// as ordinary ones, under their inner filter, and are reported per group in
// Result.Groups so the broker can pick one member per message.
package topics
