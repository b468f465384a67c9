// bptrace FUNCS OUT STDINFILE PROG ARGV0 [K=V...]: run PROG (non-PIE) under ptrace with an int3
// on the first byte of every function listed in FUNCS (hex address a line); each function is
// logged to OUT once, in first-execution order, then its byte restored. Child stdout -> OUT.stdout.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <errno.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/user.h>
static long *addr; static unsigned char *orig; static int n;
static int cmp(const void*a,const void*b){long x=*(long*)a,y=*(long*)b;return x<y?-1:x>y;}
static void setbyte(pid_t p,long a,unsigned char b){long al=a&~7L;errno=0;long w=ptrace(PTRACE_PEEKTEXT,p,al,0);int sh=(a-al)*8;w=(w&~(0xffL<<sh))|((long)b<<sh);ptrace(PTRACE_POKETEXT,p,al,w);}
static unsigned char getbyte(pid_t p,long a){long al=a&~7L;long w=ptrace(PTRACE_PEEKTEXT,p,al,0);return (w>>((a-al)*8))&0xff;}
int main(int argc,char**argv){FILE*f=fopen(argv[1],"r");long cap=1<<16;addr=malloc(cap*8);char l[64];
 while(fgets(l,sizeof l,f)){if(n==cap){cap*=2;addr=realloc(addr,cap*8);}addr[n++]=strtol(l,0,16);}fclose(f);
 qsort(addr,n,8,cmp);{int m=0;for(int i=0;i<n;i++)if(!m||addr[i]!=addr[m-1])addr[m++]=addr[i];n=m;} // aliases: one breakpoint
 orig=malloc(n);FILE*o=fopen(argv[2],"w");char*av[]={argv[5],NULL};
 pid_t p=fork();if(!p){char so[4096];snprintf(so,sizeof so,"%s.stdout",argv[2]);int fd=open(argv[3],O_RDONLY);dup2(fd,0);
  int sf=open(so,O_WRONLY|O_CREAT|O_TRUNC,0644);dup2(sf,1);int nul=open("/dev/null",O_WRONLY);dup2(nul,2);
  ptrace(PTRACE_TRACEME,0,0,0);execve(argv[4],av,&argv[6]);_exit(127);}
 int st;waitpid(p,&st,0);ptrace(PTRACE_SETOPTIONS,p,0,PTRACE_O_EXITKILL);
 for(int i=0;i<n;i++){orig[i]=getbyte(p,addr[i]);setbyte(p,addr[i],0xcc);}
 int hits=0,sig=0;
 while(1){ptrace(PTRACE_CONT,p,0,sig);sig=0;if(waitpid(p,&st,0)<0||WIFEXITED(st)||WIFSIGNALED(st))break;
  if(!WIFSTOPPED(st))continue;int s=WSTOPSIG(st);
  if(s==SIGTRAP){struct user_regs_struct r;ptrace(PTRACE_GETREGS,p,0,&r);long a=r.rip-1;
   long*k=bsearch(&a,addr,n,8,cmp);if(k){int i=k-addr;setbyte(p,a,orig[i]);r.rip=a;ptrace(PTRACE_SETREGS,p,0,&r);fprintf(o,"%lx\n",a);hits++;continue;}
   sig=0;continue;}
  sig=s;}
 fprintf(stderr,"%s: %d functions entered (of %d)%s\n",argv[5],hits,n,WIFSIGNALED(st)?" KILLED":"");fclose(o);return 0;}
