package engine

import "gomodules.xyz/jsonpatch/v2"

// JSONPatchOp is one JSON-patch operation (RFC 6902), the type controller-runtime uses.
type JSONPatchOp = jsonpatch.JsonPatchOperation
