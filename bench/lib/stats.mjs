// Small statistics for the benchmarks' tables.

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export function mean(values) {
  return values.reduce((a, b) => a + b, 0) / values.length;
}
