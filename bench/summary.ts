/** One line of the table `pnpm bench` ends with: every benchmark's headline figures against their targets. */
export interface SummaryRow {
  benchmark: string;
  measure: string;
  result: string;
  target: string;
  /** Whether the target is met; null where the line has no target. */
  met: boolean | null;
}
