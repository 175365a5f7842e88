"""The OpenAI-compatible side of vlmchat: the /v1 server (serve) and the vLLM / SGLang hand-off (handoff)."""
