// The one error type of the client core.

/** A mistake of the caller (file, sidecar, image, arguments): shown as one `error: ...` line. */
export class UserError extends Error {
  constructor(message) {
    super(message);
    this.name = "UserError";
  }
}

/** The first line of an error's message (onnxruntime's carry a stack of C++ frames). */
export function firstLine(err) {
  return String(err?.message ?? err).split("\n")[0];
}
