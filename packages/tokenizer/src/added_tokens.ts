// Splitting text on added tokens (<start_of_turn>, "\n\n", <unused5>, …) before the BPE model sees
// it, as HF tokenizers' AddedVocabulary does: leftmost-longest matches on the raw text.

interface TrieNode {
  id: number; // token id ending here, or -1
  next: Map<number, TrieNode> | null; // by UTF-16 code unit
}

/** One piece of a split: `id` ≥ 0 for an added token, -1 for plain text. */
export interface Piece {
  id: number;
  start: number;
  end: number;
}

export class AddedTokenSplitter {
  private readonly root: TrieNode = { id: -1, next: new Map() };
  // Code units that start some added token: a cheap filter for the common case.
  private readonly first = new Uint8Array(65536);

  constructor(tokens: Iterable<{ content: string; id: number }>) {
    for (const { content, id } of tokens) {
      if (content.length === 0) continue;
      let node = this.root;
      for (let i = 0; i < content.length; i++) {
        const c = content.charCodeAt(i);
        node.next ??= new Map();
        let child = node.next.get(c);
        if (!child) {
          child = { id: -1, next: null };
          node.next.set(c, child);
        }
        node = child;
      }
      node.id = id;
      this.first[content.charCodeAt(0)] = 1;
    }
  }

  /** Splits `text` into plain and added-token pieces, in order, covering it exactly. */
  split(text: string): Piece[] {
    const out: Piece[] = [];
    const n = text.length;
    let segStart = 0;
    for (let i = 0; i < n;) {
      const c = text.charCodeAt(i);
      if (this.first[c] === 1) {
        let node = this.root.next!.get(c);
        let j = i + 1;
        let best = -1;
        let bestEnd = i;
        while (node) {
          if (node.id >= 0) {
            best = node.id;
            bestEnd = j;
          }
          if (j >= n || !node.next) break;
          node = node.next.get(text.charCodeAt(j));
          j++;
        }
        if (best >= 0) {
          if (segStart < i) out.push({ id: -1, start: segStart, end: i });
          out.push({ id: best, start: i, end: bestEnd });
          i = segStart = bestEnd;
          continue;
        }
      }
      i++;
    }
    if (segStart < n) out.push({ id: -1, start: segStart, end: n });
    return out;
  }
}
