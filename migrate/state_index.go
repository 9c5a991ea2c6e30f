package migrate

import (
	"fmt"
)

// The users table's indexers. They make exactly the keys
// memdb.StringFieldIndex{Field: "ID"} and the CompoundIndex of Phase and ID
// made (a string field is its bytes and a 0 byte; a compound key is its
// parts one after the other), read straight from *User instead of through
// reflection: at a million users reflection was a tenth of the State's work
// in a campaign step. TestUserIndexesMatchMemdb holds them to memdb's.

// userIDIndex indexes users by id.
type userIDIndex struct{}

func (userIDIndex) FromObject(raw any) (bool, []byte, error) {
	u, err := indexedUser(raw)
	if err != nil || u.ID == "" {
		return false, nil, err
	}
	return true, appendField(make([]byte, 0, len(u.ID)+1), u.ID), nil
}

func (userIDIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("migrate: id index takes one argument, got %d", len(args))
	}
	s, err := stringArg(args[0])
	if err != nil {
		return nil, err
	}
	return appendField(nil, s), nil
}

func (userIDIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("migrate: id index takes one argument, got %d", len(args))
	}
	s, err := stringArg(args[0])
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}

// phaseIDIndex indexes users by phase, then id.
type phaseIDIndex struct{}

func (phaseIDIndex) FromObject(raw any) (bool, []byte, error) {
	u, err := indexedUser(raw)
	if err != nil || u.Phase == "" || u.ID == "" {
		return false, nil, err
	}
	key := make([]byte, 0, len(u.Phase)+len(u.ID)+2)
	return true, appendField(appendField(key, string(u.Phase)), u.ID), nil
}

func (phaseIDIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("migrate: phase index takes a phase and an id, got %d arguments", len(args))
	}
	var key []byte
	for _, a := range args {
		s, err := stringArg(a)
		if err != nil {
			return nil, err
		}
		key = appendField(key, s)
	}
	return key, nil
}

// PrefixFromArgs takes the phase, or the phase and the start of an id.
func (phaseIDIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	if len(args) == 0 || len(args) > 2 {
		return nil, fmt.Errorf("migrate: phase index prefix takes a phase and at most an id, got %d arguments", len(args))
	}
	var key []byte
	for i, a := range args {
		s, err := stringArg(a)
		if err != nil {
			return nil, err
		}
		if i == len(args)-1 {
			return append(key, s...), nil
		}
		key = appendField(key, s)
	}
	return key, nil
}

func indexedUser(raw any) (*User, error) {
	u, ok := raw.(*User)
	if !ok {
		return nil, fmt.Errorf("migrate: users table holds %T, want *User", raw)
	}
	return u, nil
}

func stringArg(a any) (string, error) {
	s, ok := a.(string)
	if !ok {
		return "", fmt.Errorf("migrate: index argument must be a string: %#v", a)
	}
	return s, nil
}

// appendField appends s and the 0 byte that ends a string field's key.
func appendField(key []byte, s string) []byte {
	return append(append(key, s...), 0)
}
