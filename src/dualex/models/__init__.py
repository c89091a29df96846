"""Model files shipped with dualex and small model factories (random-init CLIPs, tokenizers)."""
