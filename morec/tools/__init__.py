"""Dataset tooling, outside the training runtime: building and converting image LMDBs, converting
public data sets, dataset cards, the ml-100k posters and transfer domains, and slow reference
implementations for tests and benchmarks. Nothing that `morec.train` imports imports this package.
"""
