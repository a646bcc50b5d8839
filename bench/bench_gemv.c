/* GEMV at M = 1 on the shapes of a GPT-2-small decode step, one run, side by
 * side: oneDNN's dnnl_sgemm (the GEMM door's library) against a plain
 * AVX-512 matrix-vector loop (the shape of the kernel table's gemv), and a
 * streaming read (a sum over 1 GiB) for the bandwidth both are bound by.
 * With bf16 weights (the same matrices rounded): the loop of the kernel
 * table's gemv_bf16 (each 32-bit lane's two bf16 widened by a shift and a
 * mask, fp32 FMAs with x's even and odd columns, the next four rows'
 * lines prefetched), the same without the prefetch, and AVX512_BF16's
 * vdpbf16ps (which also rounds x to bf16), for the choice between them.
 * GB/s counts the bytes of the weights as stored (4 or 2 per weight).
 * --cpu-time: process CPU time instead of wall clock (1 thread: the time on
 * a core, not the time spent waiting for one on a loaded machine).
 * Twelve layers' weights (qkv 2304x768, out 768x768, fc 3072x768, proj
 * 768x3072: 340 MB) and the head (50257x768: 154 MB) are distinct buffers,
 * so every product reads from memory, as a decoder step does.
 * Standalone (not built by CMake; it needs an AVX-512 CPU):
 *   cc -O2 -march=native -fopenmp bench/bench_gemv.c -o /tmp/bench_gemv -ldnnl
 *   OMP_NUM_THREADS=1 /tmp/bench_gemv [--cpu-time] */
#include <oneapi/dnnl/dnnl.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
static clockid_t clk = CLOCK_MONOTONIC;
static double now(void){struct timespec t;clock_gettime(clk,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static inline uint16_t f2bf(float f){uint32_t u;memcpy(&u,&f,4);u+=0x7fff+((u>>16)&1);return (uint16_t)(u>>16);}
/* y[N] = W[N,K] x[K], W bf16: even / odd columns of each 32-bit lane */
static void gemv_bf16(const uint16_t *W, const float *x, float *y, long N, long K, int pf){
  const __m512i ie=_mm512_set_epi32(30,28,26,24,22,20,18,16,14,12,10,8,6,4,2,0);
  const __m512i io=_mm512_set_epi32(31,29,27,25,23,21,19,17,15,13,11,9,7,5,3,1);
  const __m512i hi=_mm512_set1_epi32((int)0xffff0000u);
#pragma omp parallel for schedule(static)
  for(long n=0;n<N;n+=4){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,b0=a0,b1=a0,b2=a0,b3=a0;
    const uint16_t *w0=W+n*K,*w1=w0+K,*w2=w1+K,*w3=w2+K;
    for(long k=0;k<K;k+=32){
      if(pf){_mm_prefetch((const char*)(w0+4*K+k),_MM_HINT_T0);_mm_prefetch((const char*)(w1+4*K+k),_MM_HINT_T0);
             _mm_prefetch((const char*)(w2+4*K+k),_MM_HINT_T0);_mm_prefetch((const char*)(w3+4*K+k),_MM_HINT_T0);}
      __m512 xa=_mm512_loadu_ps(x+k),xb=_mm512_loadu_ps(x+k+16);
      __m512 xe=_mm512_permutex2var_ps(xa,ie,xb),xo=_mm512_permutex2var_ps(xa,io,xb);
      __m512i v0=_mm512_loadu_si512(w0+k),v1=_mm512_loadu_si512(w1+k),v2=_mm512_loadu_si512(w2+k),v3=_mm512_loadu_si512(w3+k);
#define E_(v) _mm512_castsi512_ps(_mm512_slli_epi32(v,16))
#define O_(v) _mm512_castsi512_ps(_mm512_and_si512(v,hi))
      a0=_mm512_fmadd_ps(E_(v0),xe,a0);a1=_mm512_fmadd_ps(E_(v1),xe,a1);a2=_mm512_fmadd_ps(E_(v2),xe,a2);a3=_mm512_fmadd_ps(E_(v3),xe,a3);
      b0=_mm512_fmadd_ps(O_(v0),xo,b0);b1=_mm512_fmadd_ps(O_(v1),xo,b1);b2=_mm512_fmadd_ps(O_(v2),xo,b2);b3=_mm512_fmadd_ps(O_(v3),xo,b3);}
    y[n]=_mm512_reduce_add_ps(_mm512_add_ps(a0,b0));y[n+1]=_mm512_reduce_add_ps(_mm512_add_ps(a1,b1));
    y[n+2]=_mm512_reduce_add_ps(_mm512_add_ps(a2,b2));y[n+3]=_mm512_reduce_add_ps(_mm512_add_ps(a3,b3));
  }
}
/* the same with vdpbf16ps: x rounded to bf16 pairs first (xb[K/2] lanes) */
static void gemv_dpbf16(const uint16_t *W, const uint16_t *xb, float *y, long N, long K){
#pragma omp parallel for schedule(static)
  for(long n=0;n<N;n+=4){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
    const uint16_t *w0=W+n*K,*w1=w0+K,*w2=w1+K,*w3=w2+K;
    for(long k=0;k<K;k+=32){
      _mm_prefetch((const char*)(w0+4*K+k),_MM_HINT_T0);_mm_prefetch((const char*)(w1+4*K+k),_MM_HINT_T0);
      _mm_prefetch((const char*)(w2+4*K+k),_MM_HINT_T0);_mm_prefetch((const char*)(w3+4*K+k),_MM_HINT_T0);
      __m512bh xv=(__m512bh)_mm512_loadu_si512(xb+k);
      a0=_mm512_dpbf16_ps(a0,(__m512bh)_mm512_loadu_si512(w0+k),xv);a1=_mm512_dpbf16_ps(a1,(__m512bh)_mm512_loadu_si512(w1+k),xv);
      a2=_mm512_dpbf16_ps(a2,(__m512bh)_mm512_loadu_si512(w2+k),xv);a3=_mm512_dpbf16_ps(a3,(__m512bh)_mm512_loadu_si512(w3+k),xv);}
    y[n]=_mm512_reduce_add_ps(a0);y[n+1]=_mm512_reduce_add_ps(a1);y[n+2]=_mm512_reduce_add_ps(a2);y[n+3]=_mm512_reduce_add_ps(a3);
  }
}
/* y[N] = W[N,K] x[K] */
static void gemv(const float *W, const float *x, float *y, long N, long K){
#pragma omp parallel for schedule(static)
  for(long n=0;n<N;n+=4){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
    const float *w0=W+n*K,*w1=w0+K,*w2=w1+K,*w3=w2+K;
    for(long k=0;k<K;k+=16){__m512 xv=_mm512_loadu_ps(x+k);
      a0=_mm512_fmadd_ps(_mm512_loadu_ps(w0+k),xv,a0);a1=_mm512_fmadd_ps(_mm512_loadu_ps(w1+k),xv,a1);
      a2=_mm512_fmadd_ps(_mm512_loadu_ps(w2+k),xv,a2);a3=_mm512_fmadd_ps(_mm512_loadu_ps(w3+k),xv,a3);}
    y[n]=_mm512_reduce_add_ps(a0);y[n+1]=_mm512_reduce_add_ps(a1);y[n+2]=_mm512_reduce_add_ps(a2);y[n+3]=_mm512_reduce_add_ps(a3);
  }
}
static float sum(const float *a,long n){__m512 s=_mm512_setzero_ps(),s2=s;
#pragma omp parallel
 { __m512 l=_mm512_setzero_ps(),l2=l,l3=l,l4=l;
#pragma omp for schedule(static)
  for(long i=0;i<n;i+=64){l=_mm512_add_ps(l,_mm512_load_ps(a+i));l2=_mm512_add_ps(l2,_mm512_load_ps(a+i+16));l3=_mm512_add_ps(l3,_mm512_load_ps(a+i+32));l4=_mm512_add_ps(l4,_mm512_load_ps(a+i+48));}
#pragma omp critical
  s=_mm512_add_ps(s,_mm512_add_ps(_mm512_add_ps(l,l2),_mm512_add_ps(l3,l4)));}
 (void)s2; return _mm512_reduce_add_ps(s);}
int main(int argc,char**argv){
  if(argc>1&&!strcmp(argv[1],"--cpu-time")) clk=CLOCK_PROCESS_CPUTIME_ID;
  long K=768; long Ns[]={2304,768,3072};
  /* 12 layers worth: per layer wqkv [2304,768], wo [768,768], w1 [3072,768], w2 [768,3072] */
  long tot=0; float *W[48]; long NN[48],KK[48];
  for(int l=0;l<12;l++){long sh[4][2]={{2304,768},{768,768},{3072,768},{768,3072}};for(int j=0;j<4;j++){NN[l*4+j]=sh[j][0];KK[l*4+j]=sh[j][1];W[l*4+j]=aligned_alloc(64,sh[j][0]*sh[j][1]*4);for(long i=0;i<sh[j][0]*sh[j][1];i++)W[l*4+j][i]=(i%7)*0.01f;tot+=sh[j][0]*sh[j][1];}}
  long V=50257; float *H=aligned_alloc(64,(V+3)*K*4); for(long i=0;i<(V+3)*K;i++)H[i]=0.001f*(i%5);
  uint16_t *WB[48],*HB=aligned_alloc(64,(V+3)*K*2);
  for(int i=0;i<48;i++){WB[i]=aligned_alloc(64,NN[i]*KK[i]*2);for(long j=0;j<NN[i]*KK[i];j++)WB[i][j]=f2bf(W[i][j]);}
  for(long i=0;i<(V+3)*K;i++)HB[i]=f2bf(H[i]);
  float *x=aligned_alloc(64,3072*4),*y=aligned_alloc(64,(V+4)*4); for(int i=0;i<3072;i++)x[i]=1;
  uint16_t *xb=aligned_alloc(64,3072*2); for(int i=0;i<3072;i++)xb[i]=f2bf(x[i]);
  long n=1L<<28; float *big=aligned_alloc(64,n*4); memset(big,0,n*4);
  for(int r=0;r<2;r++){double t0=now();volatile float s=sum(big,n);double t=now()-t0;printf("stream %.1f GB/s\n",n*4/t/1e9);}
  for(int r=0;r<3;r++){
   double t0=now(); for(int i=0;i<48;i++) dnnl_sgemm('N','T',1,NN[i],KK[i],1.f,x,KK[i],W[i],KK[i],0.f,y,NN[i]); double t1=now();
   dnnl_sgemm('N','T',1,V,K,1.f,x,K,H,K,0.f,y,V); double t2=now();
   for(int i=0;i<48;i++) gemv(W[i],x,y,NN[i],KK[i]); double t3=now(); gemv(H,x,y,V+3,K); double t4=now();
   printf("layers: dnnl %.2f ms (%.1f GB/s) own %.2f ms (%.1f GB/s); head: dnnl %.2f ms (%.1f GB/s) own %.2f ms (%.1f GB/s)\n",
     (t1-t0)*1e3,tot*4/(t1-t0)/1e9,(t3-t2)*1e3,tot*4/(t3-t2)/1e9,(t2-t1)*1e3,V*K*4/(t2-t1)/1e9,(t4-t3)*1e3,V*K*4/(t4-t3)/1e9);
   const char *nm[3]={"bf16 shift+prefetch","bf16 shift, no prefetch","bf16 vdpbf16ps"};
   for(int v=0;v<3;v++){double u0=now();
     for(int i=0;i<48;i++){if(v<2)gemv_bf16(WB[i],x,y,NN[i],KK[i],v==0);else gemv_dpbf16(WB[i],xb,y,NN[i],KK[i]);}
     if(v<2)gemv_bf16(HB,x,y,V+3,K,v==0);else gemv_dpbf16(HB,xb,y,V+3,K);
     double u1=now(); printf("  %-24s layers+head %.2f ms (%.1f GB/s of bf16; %.2fx the own fp32 loop's time)\n",nm[v],(u1-u0)*1e3,(tot+V*K)*2/(u1-u0)/1e9,(t4-t2)/(u1-u0));}
  }
}
