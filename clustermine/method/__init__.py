"""The method as array maths: encoders, corpus, clustering, votes, scores, calibration, metrics."""
