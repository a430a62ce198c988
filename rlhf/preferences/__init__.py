"""From human rankings to training pairs: votes, aggregation across annotators, and quality statistics."""
