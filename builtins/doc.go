// Package builtins holds Celadon's builtin actions, one file each. Every
// builtin registers itself by name in Registry from an init function; the
// engine looks builtins up there when policies load.
package builtins
