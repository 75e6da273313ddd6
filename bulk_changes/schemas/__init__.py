"""What comes in from outside, as pydantic models: the tenants file and the queue
messages' JSON bodies. Each is turned into the domain's plain types (``domain.settings``,
``domain.messages``) here, at the edge, so the domain keeps to the standard library. The
JSON Schema beside these modules is generated from the models (``generate``)."""
