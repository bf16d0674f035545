"""One router per concern, each built by a function (a router can be attached to one dispatcher only)."""
