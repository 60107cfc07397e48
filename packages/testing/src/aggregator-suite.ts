/** Aggregator robustness compliance suite: run the same cases against every aggregation rule. */
export {}
