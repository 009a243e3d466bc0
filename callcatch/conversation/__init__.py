"""The booking conversation: slot filling, the local model, guardrails."""
