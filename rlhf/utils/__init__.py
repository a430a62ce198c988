"""Small shared utilities (callable specs, seeding, device environment)."""
