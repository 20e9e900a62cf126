// SCAFFOLD: replaced by `stevedore prefetch` (issue 11).
export async function runPrefetchCommand(_args: string[]): Promise<number> {
  throw new Error('not implemented yet')
}
