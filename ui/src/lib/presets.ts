// Image sizes that suit each model family (what it was trained at, and common aspect ratios around that).
const SD15: [number, number][] = [
  [512, 512],
  [512, 768],
  [768, 512],
  [448, 640],
  [640, 448],
];
const SD2: [number, number][] = [
  [768, 768],
  [576, 768],
  [768, 576],
  [512, 512],
];
const XL: [number, number][] = [
  [1024, 1024],
  [832, 1216],
  [1216, 832],
  [896, 1152],
  [1152, 896],
  [768, 1344],
  [1344, 768],
];

export function sizePresets(family: string | undefined): [number, number][] {
  switch (family) {
    case "sd1":
    case "sdxs":
      return SD15;
    case "sd2":
      return SD2;
    case undefined:
      return [];
    default:
      return XL;
  }
}

export function aspect(width: number, height: number): string {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const d = gcd(width, height);
  return `${width / d}:${height / d}`;
}
