package verification

// SystemKey is the system key verification keys its MACs under
// (vault.SystemKeys; cmd/kluis gathers every feature's names, SystemKeys,
// and loads them): the answers of micro-deposits and codes (answer_mac)
// and the sandbox rail's seal keys, each domain-separated by a label of
// its own. The stored key of this name is older than the features' own
// names: bank linking derives what providers hold from it too
// (banklink.SystemKeyHeld), so its name and key never change.
const SystemKey = "verification"

// SystemKeys are the names of the system keys verification needs loaded.
func SystemKeys() []string { return []string{SystemKey} }
