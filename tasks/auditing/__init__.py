"""The audit stage's checks, each a pure function on arrays (tasks/audit.py does the I/O).

duplicates  near-duplicates across splits: embedding cosine similarity + a dHash
labels      label-issue candidates: out-of-fold probabilities + cleanlab
drift       the new data against a reference (the champion's): MMD + image statistics
figures     near-duplicate pairs and label suspects, drawn side by side
"""
