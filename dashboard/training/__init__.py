"""The Training tab: heads over the checkpoints of a training series (metric against step, loss, pattern-label
timeline, entropy-collapse alert); a click on two steps opens their A − B comparison in the Corpus tab."""
