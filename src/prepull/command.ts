// SCAFFOLD: replaced by `stevedore prepull` (issue 11).
export async function runPrepullCommand(_args: string[]): Promise<number> {
  throw new Error('not implemented yet')
}
